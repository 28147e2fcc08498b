"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) in Keras 3.

    from reproduce import alexnet, get_config
    model = alexnet(image_size=227, num_classes=1000)      # the paper's two-tower net
    cfg = get_config("imagenette", ["model.lrn=false"])    # the typed configuration tree

Heavy modules (Keras) load on first use, so `reproduce.config` and
`reproduce.runs` stay cheap for the report generator.
"""

from reproduce.config import Config, ConfigError, get_config  # noqa: F401

__all__ = ["alexnet", "build_model", "get_config", "Config", "ConfigError", "train"]


def __getattr__(name):
    if name in ("alexnet", "build_model", "cifar_fig1", "cifar_local"):
        from reproduce import model

        return getattr(model, name)
    if name == "train":
        from reproduce.train import train

        return train
    raise AttributeError(f"module 'reproduce' has no attribute {name!r}")
