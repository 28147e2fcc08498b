"""AlexNet (Krizhevsky, Sutskever & Hinton, NIPS 2012) in Keras 3.

    from reproduce import alexnet, get_config
    model = alexnet(image_size=227, num_classes=1000)      # the paper's two-tower net
    cfg = get_config("imagenette", ["model.lrn=false"])    # the typed configuration tree

Heavy modules (Keras) load on first use, so `reproduce.config` and
`reproduce.runs` stay cheap for the report generator. Once Keras is imported,
the layers a saved ``model.keras`` needs are registered, so ``import reproduce``
is all that loading one takes (`reproduce.inference`).

Modules import downwards only, lowest first (tests/test_imports.py checks it):

1. `files` (cache root, atomic writes, umask, pids): standard library
2. `sources` (what data.source names, its identity by content) < `config`;
   `runs` < `benchfile`; `logs`: standard library (NumPy inside functions); the
   report and the ablation registry import nothing above this layer
3. `data`: common < cache, decode, pixelstats, synthetic, batches < imagefolder,
   tfds_source < shard_source (the shards reader) < the package < shards (their
   writer): NumPy, Pillow; TensorFlow and Keras only inside functions, and in batches
4. `layers`, `augment` < `model`; `flops`; `devices`; `checkpoint` <
   `callbacks`; `distribute` < `evaluate`: Keras
5. `train`; then `inference` and `bench`, which use it; then `__main__`
"""

import importlib
import importlib.abc
import sys

from reproduce.config import Config, ConfigError, get_config  # noqa: F401

__all__ = ["alexnet", "build_model", "get_config", "Config", "ConfigError", "train"]

# The modules that register the layers of a saved model.keras with Keras.
_SAVED_LAYERS = ("reproduce.layers", "reproduce.augment")


def _register_saved_layers() -> None:
    for name in _SAVED_LAYERS:
        importlib.import_module(name)


class _AfterKeras(importlib.abc.MetaPathFinder):
    """Registers the saved layers as soon as Keras has been imported, wherever that
    happens: importing them here would load Keras (and its backend) for the report,
    which uses only `config` and `runs`."""

    def find_spec(self, name, path=None, target=None):
        if name != "keras":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_keras = loader.exec_module

        def exec_module(module):
            exec_keras(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            _register_saved_layers()

        loader.exec_module = exec_module  # this spec's loader only
        return spec


if "keras" in sys.modules:
    _register_saved_layers()
elif not any(isinstance(f, _AfterKeras) for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterKeras())


def __getattr__(name):
    if name in ("alexnet", "build_model", "cifar_fig1", "cifar_local"):
        from reproduce import model

        return getattr(model, name)
    if name == "train":
        from reproduce.train import train

        return train
    raise AttributeError(f"module 'reproduce' has no attribute {name!r}")
