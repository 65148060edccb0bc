"""The ``streamcam`` command, also as ``python -m streamcam``.

Signal handlers go in before anything else loads (argparse, logging, torch), so
that a Ctrl-C at the very start already gets the clean exit.
"""

from streamcam import interrupts


def entry() -> None:
    interrupts.install()
    from streamcam.cli import entry as run_command

    run_command()


if __name__ == "__main__":
    entry()
