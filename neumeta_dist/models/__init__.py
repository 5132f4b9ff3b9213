"""Network families (ResNet, LeNet, torchvision/CIFAR zoo weights): their layer tables
(family.py), how the student replaces batch norm (norms.py), and the registry that builds one
by name (registry.py).

The names alone live here, torch-free, so config.py validates `model.family` on a login node;
`registry.register_family` appends a new family's name.
"""
FAMILIES: list[str] = ["resnet20", "resnet56", "resnet18", "resnet50", "lenet"]
