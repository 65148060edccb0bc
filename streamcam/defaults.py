"""The names and defaults the command line checks before torch loads.

Parsing arguments and refusing a bad one must take well under a second, and
importing torch takes several: so what a usage error needs lives here, in plain
Python. The modules that implement each name check that they agree with this
list when they load (``streamcam.explainers``, ``streamcam.backends``).
"""

from __future__ import annotations

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_BOX_THRESHOLD = 0.2  # fraction of a map's max kept for boxes (CAM paper)
METHOD_NAMES = ("cam", "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "counterfactual",
                "guided-backprop", "guided-gradcam")
BACKENDS = ("auto", "torch", "onnxruntime")
PRECISION_NAMES = ("fp32", "fp16", "bf16")
# ONNX opsets written exactly as asked: 18 is torch's exporter's own (below it, a down-conversion that fails
# on these graphs and silently falls back to 18); 23 the highest torch declares (torch.onnx._constants).
DEFAULT_OPSET = 18
OPSETS = range(18, 24)
