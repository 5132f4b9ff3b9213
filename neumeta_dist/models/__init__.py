"""Network families (ResNet, LeNet, torchvision/CIFAR zoo weights): their layer tables
(family.py), how the student replaces batch norm (norms.py), and the registry that builds one
by name (registry.py).

The names alone live here, torch-free, so config.py validates `model.family` and
`teacher.checkpoint` on a login node; `registry.register_family` appends a new family's name.
"""
FAMILIES: list[str] = ["resnet20", "resnet56", "resnet18", "resnet50", "lenet"]
TORCHVISION = "torchvision:"  # teacher.checkpoint=torchvision:<Weights enum>.<member>


def is_remote(spec: str) -> bool:
    """A `teacher.checkpoint` that zoo.locate fetches (a URL or torchvision weights), not a path."""
    return spec.startswith(TORCHVISION) or spec.split("://", 1)[0] in ("http", "https", "file")
