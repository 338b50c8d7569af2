"""Salt segmentation models: a registry of architectures behind one config and one wrapper.

Example:
    >>> from saltseg.models import ModelConfig, create_model
    >>> model = create_model(ModelConfig(arch="unet", encoder="resnet34"))
    >>> out = model(x)  # x: (B, 1, 101, 101) in [0, 1]; out["mask"]: (B, 1, 101, 101) logits
"""

from saltseg.models.adapter import InputAdapter
from saltseg.models.config import ModelConfig
from saltseg.models.registry import MODEL_REGISTRY, create_model, list_models, register_model
from saltseg.models.wrapper import SaltModel, count_parameters

# Register the built-in architectures.
from saltseg.models import classifier, segmentation, vanilla  # noqa: F401  # isort: skip

__all__ = [
    "MODEL_REGISTRY",
    "InputAdapter",
    "ModelConfig",
    "SaltModel",
    "count_parameters",
    "create_model",
    "list_models",
    "register_model",
]
