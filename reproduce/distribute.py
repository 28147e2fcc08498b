"""Several devices and several machines, chosen by one value: ``distribute.scheme``.

=============  ==========================================  =============================================
scheme         TensorFlow backend                          JAX backend
=============  ==========================================  =============================================
``none``       one device (the default)                    one device
``towers``     §3.2's model parallelism: tower ``_a`` on   ``keras.distribution.ModelParallel`` on a
               device 0, tower ``_b`` on device 1          (batch 1, model 2) mesh: fc6-fc8 split
               (variables, forward, backward and update)   column-wise over the two devices, the towers
                                                           replicated (see below why)
``mirrored``   ``tf.distribute.MirroredStrategy`` over     ``keras.distribution.DataParallel`` over
               every local GPU                             every local device
``multiworker`` ``tf.distribute.MultiWorkerMirrored-        ``keras.distribution.initialize`` (i.e.
               Strategy``, cluster from ``TF_CONFIG``       ``jax.distributed.initialize``) +
                                                           ``DataParallel`` over every device of every
                                                           process
=============  ==========================================  =============================================

Whatever the scheme, ``train.batch_size`` keeps the paper's meaning (§5): the number
of images in one SGD step, 128, split between the replicas. The trainer hands the
global batch to Keras and the engines split it (``tf.distribute`` rebatches and
auto-shards; Keras' JAX trainer lays the batch out over the mesh's ``batch`` axis),
and the losses are scaled so the gradient is the mean over the global batch, as on
one device.

The trainer uses four hooks::

    with distribute.scope(cfg):                 # the whole run: seed, build, fit, evaluate
        model = build_training_model(...)
        model.compile(...)
        distribute.place(model)                 # after compile; also every other model
                                                # that runs the net (the ten-view model)
        fit(distribute.shard_batches(batches))  # the training batches

**Towers on TensorFlow (§3.2).** "The parallelization scheme that we employ
essentially puts half of the kernels (or neurons) on each GPU, with one additional
trick: the GPUs communicate only in certain layers." ``reproduce.model.alexnet``
builds each tower as explicit layers named ``*_a``/``*_b``; here tower ``_a`` goes to
device 0 and tower ``_b`` to device 1 with the tools TensorFlow has for manual
placement: a ``tf.variable_creator_scope`` that creates each tower's variables under
``tf.device`` (optimizer slots follow through Keras' ``colocate_vars_with``), and a
graph device function (``tf.Graph.device``, the mechanism of TF1's
``replica_device_setter``) around the traced train/test/predict steps. The device
function is needed because TF2's ``GradientTape`` does not put a gradient op on its
forward op's device (tensorflow/tensorflow#33688): with a plain ``tf.device`` around
the forward pass the whole backward pass would run on device 0. It places

1. every op under a tower layer's name scope, forward and ``gradient_tape/...``
   alike, on that tower's device;
2. every op that reads or writes a variable on the variable's device;
3. any other op whose non-scalar inputs all come from one device on that device
   (the optimizer's momentum update, the weight-decay term and its gradient).

Cross-device traffic is then the paper's: the ``concat3`` input of conv3 (both
towers' conv2 maps) and the fully connected layers. In the paper each GPU holds half
of fc6's and fc7's neurons; ``reproduce.model`` holds each fully connected layer as
one Keras layer (mathematically the same), and one variable cannot be split between
two devices by placement, so here the classifier is split by layers instead:
``concat5``/``flatten``/``fc6``/``drop6`` (37.7M weights) on device 1 and
``fc7``/``drop7``/``fc8`` (21M) on device 0, which keeps each device at about half of
the 61M weights, the point of §3.2 on 3 GB GPUs. XLA compiles a function for one
device, so ``place`` turns ``jit_compile`` off for the towers.

**Towers on JAX.** JAX runs one SPMD program on every device of a mesh; it cannot
run ``conv1_a`` on one device and ``conv1_b`` on another inside one ``jit`` (all
arguments of a jitted computation must live on the same devices). The SPMD form of
the towers would be one stacked kernel per layer, shape ``(2, kh, kw, cin, cout)``,
sharded on its first axis over a two-device ``model`` axis; ``reproduce.model``
keeps the towers as separate layers (for placement by name, as above, and for the
paper's conv1 kernel figure), so each tower's kernel is a whole variable and a
``LayoutMap`` can only replicate it. What JAX users get is
``keras.distribution.ModelParallel`` on a ``(batch=1, model=2)`` mesh that splits
fc6, fc7 and fc8 -- 96% of the parameters and the layers where the paper's GPUs
exchange activations -- column-wise (each device holds half of each layer's neurons,
as in the paper), with the convolutional towers replicated (both devices compute
both towers on the whole batch). XLA's SPMD partitioner inserts the communication.

**Data parallelism on JAX** needs every global batch to split evenly over the
devices (Keras lays the batch out with ``jax.make_array_from_process_local_data``);
``shard_batches`` drops a final partial training batch that does not (at most
``devices - 1`` images an epoch), and ``place`` runs evaluation with the batch
replicated, so no validation image is dropped.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import distribution as kd

from reproduce.config import check_value
from reproduce.data.batches import DerivedBatches, StreamBatches
from reproduce.model import TOWER_SUFFIXES, tower_layers

# §3.2: "we spread the net across two GPUs".
TOWER_DEVICES = 2

# Layers that are in neither tower (reproduce.model.tower_layers) but have a device
# under the towers scheme: the classifier split by layers, about half of the
# weights on each device (see the module docstring). Ops of other shared layers
# (augment, concat3, the loss) go to the default device, device 0.
SHARED_PLACEMENT = {
    "concat5": 1,
    "flatten": 1,
    "fc6": 1,
    "drop6": 1,
    "fc7": 0,
    "drop7": 0,
    "fc8": 0,
}

# The JAX towers layout: layers whose weights are split over the `model` axis.
MODEL_PARALLEL_LAYERS = ("fc6", "fc7", "fc8")


class DistributeError(RuntimeError):
    """The scheme cannot run here: too few devices, no cluster, or the wrong model."""


# Below this many images per replica a modern GPU's step is dominated by fixed
# costs (kernel launches, the gradient all-reduce of 61M weights) rather than
# the batch's arithmetic; the paper's 128 over 8 GPUs is 16 each.
MIN_REPLICA_BATCH = 64


def replica_batch_warning(batch_size: int, num_replicas: int, scheme: str = "") -> str | None:
    """A warning when the global batch leaves fewer than MIN_REPLICA_BATCH images
    per replica; None otherwise (and on one replica)."""
    if num_replicas <= 1:
        return None
    per = batch_size // num_replicas
    if per >= MIN_REPLICA_BATCH:
        return None
    return (
        f"train.batch_size={batch_size} over the {num_replicas} replicas of "
        f"distribute.scheme={scheme!r} is {per} images per device (under "
        f"{MIN_REPLICA_BATCH}): each device mostly waits on launches and the gradient "
        f"exchange. The paper's batch keeps its meaning only as the global batch; to use "
        f"many GPUs efficiently run one suite worker per GPU instead (docs/distributed.md, "
        f'"Many GPUs: one run per GPU"), or accept the slower runs.'
    )


def _backend() -> str:
    return keras.backend.backend()


# --------------------------------------------------------------------------------------
# Devices
# --------------------------------------------------------------------------------------


def local_devices(backend: str | None = None) -> list:
    """The devices this process trains on: its accelerators if it has any, else CPUs.

    TensorFlow: logical device names (``'/device:GPU:0'``); JAX: ``jax.Device``s.
    """
    backend = backend or _backend()
    if backend == "tensorflow":
        import tensorflow as tf

        found = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return [d.name for d in found]
    if backend == "jax":
        import jax

        return list(jax.local_devices())
    raise DistributeError(f"distribute.scheme needs the tensorflow or jax backend; KERAS_BACKEND is {backend!r}")


def _too_few(scheme: str, needed: str, found: list, hint: str) -> DistributeError:
    return DistributeError(
        f"distribute.scheme={scheme!r} needs {needed}; found {len(found)}: {found!r}. "
        f"{hint} or set distribute.scheme=none to train on one device."
    )


# --------------------------------------------------------------------------------------
# The plan: what a scheme means on this backend, in this process
# --------------------------------------------------------------------------------------


@dataclass
class Plan:
    """One scheme set up on the active backend.

    ``devices``: the devices this process computes on. ``num_replicas``: how many
    slices the global batch is split into (1 for ``none`` and ``towers``).
    """

    scheme: str
    backend: str
    devices: list
    num_replicas: int = 1
    num_processes: int = 1
    process_index: int = 0
    strategy: Any = None  # tf.distribute.Strategy
    distribution: Any = None  # keras.distribution.Distribution (JAX)
    eval_distribution: Any = None  # JAX data parallelism: evaluation with the batch replicated
    placement: Any = None  # _TowerPlacement (TensorFlow towers)

    @property
    def data_parallel_jax(self) -> bool:
        return self.backend == "jax" and self.scheme in ("mirrored", "multiworker")

    def context(self):
        if self.placement is not None:
            return self.placement.creator_scope()
        if self.strategy is not None:
            return self.strategy.scope()
        if self.distribution is not None:
            return self.distribution.scope()
        return contextlib.nullcontext()

    def place(self, model):
        if self.placement is not None:
            self.placement.apply(model)
        elif self.data_parallel_jax:
            _replicated_evaluation(model, self.eval_distribution)
        return model

    def shard_batches(self, batches):
        if self.data_parallel_jax:
            return process_batches(batches, self.num_replicas, self.num_processes, self.process_index, self.scheme)
        return batches


_PLANS: dict = {}
_ACTIVE: list = []


def plan(cfg) -> Plan:
    """Set up ``cfg.distribute.scheme`` on the active backend (once per process).

    Raises DistributeError when it cannot run here, naming what was found.
    """
    scheme = cfg.distribute.scheme
    check_value("distribute.scheme", scheme)
    backend = _backend()
    if scheme == "towers" and (cfg.model.arch != "alexnet" or cfg.model.towers != 2):
        raise DistributeError(
            "distribute.scheme='towers' is the paper's two-GPU split of its two-tower net "
            f"(§3.2); it needs model.arch=alexnet and model.towers=2, not "
            f"model.arch={cfg.model.arch!r} model.towers={cfg.model.towers!r}. "
            "Use distribute.scheme=mirrored for data parallelism."
        )
    key = (backend, scheme)
    if key not in _PLANS:
        if scheme == "none":
            p = Plan(scheme, backend, local_devices(backend)[:1])
        else:
            p = {"tensorflow": _tf_plan, "jax": _jax_plan}.get(backend, _unsupported)(scheme)
        _PLANS[key] = p
    return _PLANS[key]


def _unsupported(scheme):
    raise DistributeError(
        f"distribute.scheme={scheme!r} needs the tensorflow or jax backend; KERAS_BACKEND is {_backend()!r}"
    )


@contextlib.contextmanager
def scope(cfg):
    """The run's distribution context: enter it before anything touches a device.

    ``multiworker`` must start the cluster before TensorFlow or JAX initializes
    its devices, so the trainer enters this first, before seeding.
    """
    p = plan(cfg)
    _ACTIVE.append(p)
    try:
        with p.context():
            yield p
    finally:
        _ACTIVE.pop()


def active() -> Plan | None:
    """The plan of the innermost ``scope``, or None outside every scope."""
    return _ACTIVE[-1] if _ACTIVE else None


def place(model):
    """Prepare a model built inside ``scope`` for its scheme (call after ``compile``).

    TensorFlow ``towers``: device placement of ops and a check of the variables'
    devices. JAX data parallelism: evaluation and prediction with the batch
    replicated. Otherwise nothing. Returns the model.
    """
    p = active()
    return model if p is None else p.place(model)


def shard_batches(batches):
    """The training batches this process feeds (a PyDataset in, a PyDataset out).

    JAX data parallelism: this process's slice of each global batch, dropping a
    final batch that does not split evenly over the devices. Otherwise unchanged:
    ``tf.distribute`` splits the global batch itself.
    """
    p = active()
    return batches if p is None else p.shard_batches(batches)


# --------------------------------------------------------------------------------------
# TensorFlow
# --------------------------------------------------------------------------------------


def _tf_plan(scheme: str) -> Plan:
    import tensorflow as tf

    if scheme == "multiworker":
        tf_config = _tf_config()
        # Must come before TensorFlow initializes its runtime ("Collective ops must
        # be configured at program startup"): the trainer enters scope() first.
        strategy = _multi_worker_strategy()
        tasks = [(kind, i) for kind in ("chief", "worker") for i in range(len(tf_config["cluster"].get(kind, [])))]
        task = (tf_config["task"]["type"], int(tf_config["task"]["index"]))
        return Plan(
            scheme,
            "tensorflow",
            list(strategy.extended.worker_devices),
            num_replicas=strategy.num_replicas_in_sync,
            num_processes=len(tasks),
            process_index=tasks.index(task) if task in tasks else 0,
            strategy=strategy,
        )
    devices = local_devices("tensorflow")
    if scheme == "towers":
        if len(devices) < TOWER_DEVICES:
            raise _too_few(
                scheme, f"{TOWER_DEVICES} devices, one per tower (§3.2)", devices, "Run it on a machine with 2 GPUs"
            )
        return Plan(scheme, "tensorflow", devices[:TOWER_DEVICES], placement=_TowerPlacement(devices[:TOWER_DEVICES]))
    if scheme == "mirrored":
        if len(devices) < 2:
            raise _too_few(
                scheme, "at least 2 devices to replicate over", devices, "Run it on a machine with several GPUs"
            )
        strategy = tf.distribute.MirroredStrategy(devices=devices)
        return Plan(scheme, "tensorflow", devices, num_replicas=strategy.num_replicas_in_sync, strategy=strategy)
    raise AssertionError(scheme)


def _multi_worker_strategy():
    # The class is made here, not at module level, because it subclasses a
    # TensorFlow class and this module also runs where TensorFlow is not installed.
    import tensorflow as tf

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        """``tf.distribute.MultiWorkerMirroredStrategy`` with the ``reduce`` Keras 3 calls.

        Keras 3's TensorFlow trainer reduces two things this strategy's
        ``reduce`` rejects, so ``fit`` fails on a cluster
        (keras-team/keras#20585, tensorflow/tensorflow#72388):

        * one whole ``(images, labels)`` batch, a nest, to build the model
          symbolically (``_maybe_symbolic_build``): reduced here leaf by leaf; a
          leaf the collectives cannot average (the uint8 images) gives this
          worker's values, which is all a symbolic build looks at (shapes, dtypes);
        * every step's scalar logs with ``axis=0`` (``reduce_per_replica``):
          reduced here across replicas (``axis=None``), which is what a mean of
          per-replica scalars is.
        """

        def reduce(self, reduce_op, value, axis):
            if tf.nest.is_nested(value) and not isinstance(value, tf.distribute.DistributedValues):
                return tf.nest.map_structure(lambda v: self._reduce_leaf(reduce_op, v, axis), value)
            if axis is not None and _local(self, value).shape.rank == 0:
                axis = None
            return super().reduce(reduce_op, value, axis)

        def _reduce_leaf(self, reduce_op, value, axis):
            if not _local(self, value).dtype.is_floating:
                return _local(self, value)
            return self.reduce(reduce_op, value, axis)

    def _local(strategy, value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return tf.convert_to_tensor(value)

    return MultiWorkerMirroredStrategy()


def _tf_config() -> dict:
    text = os.environ.get("TF_CONFIG", "")
    example = (
        'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\''
    )
    if not text:
        raise DistributeError(
            "distribute.scheme='multiworker' on TensorFlow needs the cluster in the TF_CONFIG "
            f"environment variable, found none; on every machine set e.g. {example} (index = "
            "this machine's position in the list), or set distribute.scheme=mirrored for the "
            "GPUs of one machine."
        )
    try:
        tf_config = json.loads(text)
        tf_config["cluster"]["worker"], tf_config["task"]["type"], int(tf_config["task"]["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise DistributeError(
            f"TF_CONFIG={text!r} is not a cluster description ({type(e).__name__}: {e}); expected e.g. {example}"
        ) from None
    return tf_config


_DEDUP = re.compile(r"_\d+$")


class _TowerPlacement:
    """§3.2 on TensorFlow: tower ``_a`` on ``devices[0]``, tower ``_b`` on ``devices[1]``."""

    def __init__(self, devices):
        import tensorflow as tf

        self.devices = list(devices)
        self.suffixes = TOWER_SUFFIXES
        self._specs = [tf.DeviceSpec.from_string(d) for d in self.devices]
        self._layers: dict[str, int] = {}  # exact layer names, filled by apply()

    # -- which device ---------------------------------------------------------------

    def index_of_device(self, device: str) -> int | None:
        import tensorflow as tf

        if not device:
            return None
        spec = tf.DeviceSpec.from_string(device)
        for i, s in enumerate(self._specs):
            if spec.device_type == s.device_type and spec.device_index == s.device_index:
                return i
        return None

    def _index_of_name(self, name: str, by_suffix: bool) -> int | None:
        for candidate in (name, _DEDUP.sub("", name)):
            if candidate in self._layers:
                return self._layers[candidate]
            if candidate in SHARED_PLACEMENT:
                return SHARED_PLACEMENT[candidate]
            if by_suffix:
                for i, suffix in enumerate(self.suffixes):
                    if candidate.endswith(suffix):
                        return i
        return None

    def index_of_scope(self, scope: str, by_suffix: bool = False) -> int | None:
        """The device of the innermost layer name in a name scope, if it is placed.

        ``by_suffix``: also the tower suffix convention, for variables created
        before the layer names are known (the net is being built).
        """
        for segment in reversed([s for s in scope.split("/") if s]):
            i = self._index_of_name(segment, by_suffix)
            if i is not None:
                return i
        return None

    # -- variables --------------------------------------------------------------------

    def creator_scope(self):
        import tensorflow as tf

        def creator(next_creator, **kwargs):
            # Keras builds a layer inside a name scope of the layer's name, so the
            # scope says whose variable this is (the variable path is that scope).
            i = self.index_of_scope(tf.get_current_name_scope(), by_suffix=True)
            if i is None:
                return next_creator(**kwargs)
            with tf.device(self.devices[i]):
                return next_creator(**kwargs)

        return tf.variable_creator_scope(creator)

    # -- ops ----------------------------------------------------------------------------

    def apply(self, model) -> None:
        """Check the variables' devices and place the ops of ``model``'s steps."""
        nets = [m for m in _submodels(model) if tower_layers(m, 0)]
        if not nets:
            raise DistributeError(
                f"distribute.scheme='towers' found no tower layers (names ending in "
                f"{' or '.join(self.suffixes)}) in model {model.name!r}"
            )
        for net in nets:
            for i in range(TOWER_DEVICES):
                for name in tower_layers(net, i):
                    self._layers[name] = i
            wrong = []
            for layer in net.layers:
                i = self._layers.get(layer.name, SHARED_PLACEMENT.get(layer.name))
                for v in layer.weights:
                    if i is not None and self.index_of_device(_tf_variable(v).device) != i:
                        wrong.append(f"{v.path} on {_tf_variable(v).device}, not {self.devices[i]}")
            if wrong:
                raise DistributeError(
                    "distribute.scheme='towers': variables were created outside "
                    "distribute.scope(cfg), or on the wrong device: " + "; ".join(wrong[:5])
                )
            # Keras computes the weight-decay terms (the kernels' L2 regularizers)
            # outside the layers' name scopes; computing each inside its layer's scope
            # puts the term and its gradient on the layer's device too.
            for layer in net.layers:
                if self._layers.get(layer.name, SHARED_PLACEMENT.get(layer.name)) is None:
                    continue
                for v in layer.trainable_weights:
                    if v.regularizer is not None and not hasattr(v.regularizer, "scope"):
                        v.regularizer = _NameScoped(v.regularizer, layer.name)
        # One XLA cluster runs on one device: compiling the step would undo the
        # placement.
        model.jit_compile = False
        for step in ("train_step", "test_step", "predict_step"):
            setattr(model, step, self._placed(getattr(model, step)))
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            # Built now, eagerly, each momentum slot lands on its variable's device
            # (Keras' colocate_vars_with); built lazily inside the traced first step,
            # the slots would be lifted out of the graph onto the default device.
            optimizer.build(model.trainable_variables)
        if optimizer is not None and hasattr(optimizer, "_all_reduce_sum_gradients"):
            # One replica: the gradient all-reduce is the identity, but tf.distribute
            # builds it as a single IdentityN over every gradient, which would carry
            # tower b's gradients to device 0 and back every step.
            optimizer._all_reduce_sum_gradients = list

    def _placed(self, step):
        import tensorflow as tf

        device_fn = self.device_function

        def placed_step(*args, **kwargs):
            graph = tf.compat.v1.get_default_graph()
            if tf.executing_eagerly():  # run_eagerly=True: nothing to place
                return step(*args, **kwargs)
            with graph.device(device_fn):
                return step(*args, **kwargs)

        placed_step.__wrapped__ = step
        return placed_step

    def device_function(self, op) -> str:
        i = self.index_of_scope(op.name)
        if i is None:
            i = self._index_of_inputs(op)
        return "" if i is None else self.devices[i]

    def _index_of_inputs(self, op) -> int | None:
        found = set()
        for t in op.inputs:
            i = self._index_of_tensor(t)
            if t.dtype.name == "resource":
                if i is not None:  # reads, writes and updates go where the variable is
                    return i
                continue
            if i is None or t.shape.rank == 0 or t.shape.num_elements() == 1:
                continue  # scalars (learning rate, momentum, a loss) may cross devices
            found.add(i)
        return found.pop() if len(found) == 1 else None

    def _index_of_tensor(self, t) -> int | None:
        if t.dtype.name == "resource":
            return self.index_of_device(_captured_devices(t.graph).get(id(t), ""))
        if t.op.device:
            return self.index_of_device(t.op.device)
        for u in t.op.inputs:  # a variable read is colocated with its variable
            if u.dtype.name == "resource":
                return self._index_of_tensor(u)
        return None


class _NameScoped:
    """A regularizer computed inside a name scope (the layer's), so it is placed with it."""

    def __init__(self, regularizer, scope: str):
        self.regularizer = regularizer
        self.scope = scope

    def __call__(self, x):
        import tensorflow as tf

        with tf.name_scope(self.scope):
            return self.regularizer(x)

    def get_config(self):
        return self.regularizer.get_config()


def _captured_devices(graph) -> dict:
    """{id(placeholder): device} of the variables a traced function captured."""
    cache = getattr(graph, "_reproduce_captured", None)
    captures = graph.captures
    if cache is None or cache[0] != len(captures):
        devices = {id(internal): getattr(external, "device", "") or "" for external, internal in captures}
        cache = (len(captures), devices)
        graph._reproduce_captured = cache
    return cache[1]


def _tf_variable(v):
    return getattr(v, "value", v)


def _submodels(model) -> list:
    out = [model]
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_submodels(layer))
    return out


# --------------------------------------------------------------------------------------
# JAX
# --------------------------------------------------------------------------------------


def _jax_plan(scheme: str) -> Plan:
    import jax

    if scheme == "multiworker":
        _jax_initialize()
        devices = jax.devices()
        if jax.process_count() < 2:
            raise DistributeError(
                "distribute.scheme='multiworker' found 1 process: "
                f"{jax.devices()!r}. Start one process per machine with "
                "KERAS_DISTRIBUTION_JOB_ADDRESSES=<coordinator host:port>, "
                "KERAS_DISTRIBUTION_NUM_PROCESSES=<n> and KERAS_DISTRIBUTION_PROCESS_ID=<i>, "
                "or set distribute.scheme=mirrored for the devices of one machine."
            )
        # Each process feeds its own slice of every global batch (shard_batches),
        # so Keras must not shard the dataset again.
        distribution = kd.DataParallel(devices=devices, auto_shard_dataset=False)
        return Plan(
            scheme,
            "jax",
            list(jax.local_devices()),
            num_replicas=len(devices),
            num_processes=jax.process_count(),
            process_index=jax.process_index(),
            distribution=distribution,
            eval_distribution=_replicated(devices),
        )
    devices = list(jax.local_devices())
    if jax.process_count() > 1:
        raise DistributeError(
            f"distribute.scheme={scheme!r} is for one process; this is one of "
            f"{jax.process_count()}. Use distribute.scheme=multiworker."
        )
    if scheme == "towers":
        if len(devices) < TOWER_DEVICES:
            raise _too_few(
                scheme, f"{TOWER_DEVICES} devices, one per tower (§3.2)", devices, "Run it on a machine with 2 GPUs"
            )
        mesh = kd.DeviceMesh((1, TOWER_DEVICES), ("batch", "model"), devices[:TOWER_DEVICES])
        distribution = TowersModelParallel(layout_map=kd.LayoutMap(mesh), batch_dim_name="batch")
        return Plan(scheme, "jax", devices[:TOWER_DEVICES], distribution=distribution)
    if scheme == "mirrored":
        if len(devices) < 2:
            raise _too_few(
                scheme, "at least 2 devices to replicate over", devices, "Run it on a machine with several GPUs"
            )
        return Plan(
            scheme,
            "jax",
            devices,
            num_replicas=len(devices),
            distribution=kd.DataParallel(devices=devices),
            eval_distribution=_replicated(devices),
        )
    raise AssertionError(scheme)


def _jax_initialize() -> None:
    import jax

    if jax.distributed.is_initialized():
        return  # already part of a cluster
    # Without the KERAS_DISTRIBUTION_* variables JAX tries its own cluster
    # detection (SLURM, Open MPI, Cloud TPU).
    try:
        keras.distribution.initialize()
    except Exception as e:
        raise DistributeError(
            "distribute.scheme='multiworker' on JAX could not start the cluster "
            f"({type(e).__name__}: {e}). On every machine set "
            "KERAS_DISTRIBUTION_JOB_ADDRESSES=<coordinator host:port>, "
            "KERAS_DISTRIBUTION_NUM_PROCESSES=<n> and KERAS_DISTRIBUTION_PROCESS_ID=<i> "
            "(0 on the coordinator) before JAX touches a device."
        ) from None


def _replicated(devices):
    """A distribution over `devices` whose data layout is the whole batch on every device."""
    mesh = kd.DeviceMesh((1, len(devices)), ("batch", "replica"), devices)
    # Every process feeds the whole batch: nothing to shard between processes.
    return kd.ModelParallel(layout_map=kd.LayoutMap(mesh), batch_dim_name="batch", auto_shard_dataset=False)


class TowersModelParallel(kd.ModelParallel):
    """ModelParallel whose layout of fc6-fc8 depends on the weight's shape.

    Column-wise (each device holds half of the layer's neurons, as each GPU
    does in §3.2) when the number of units splits evenly over the ``model``
    axis, else row-wise, else replicated; everything else is replicated.
    """

    def get_variable_layout(self, variable):
        if getattr(variable, "_layout", None) is not None:
            return variable._layout
        parts = variable.path.split("/")
        n = self.device_mesh.shape[self.device_mesh.axis_names.index("model")]
        spec = [None] * len(variable.shape)
        if len(parts) >= 2 and _DEDUP.sub("", parts[-2]) in MODEL_PARALLEL_LAYERS:
            for axis in (len(spec) - 1, 0):  # output units first, then inputs
                if variable.shape[axis] % n == 0:
                    spec[axis] = "model"
                    break
        return kd.TensorLayout(spec, self.device_mesh)


def _replicated_evaluation(model, eval_distribution) -> None:
    """Evaluate and predict with the whole batch on every device.

    Keras' JAX trainer fixes the batch layout from the first batch of an epoch and
    needs every batch to split evenly over the devices; a last validation batch of
    an odd size would fail, and dropping it would drop images from the error
    rates. Replicating the (small) evaluation batches costs idle devices, never
    images. Every process feeds the whole batch, so under ``multiworker`` every
    process gets every prediction.
    """
    for name in ("evaluate", "predict"):
        method = getattr(model, name)

        def replicated(*args, __method=method, **kwargs):
            with eval_distribution.scope():
                return __method(*args, **kwargs)

        replicated.__wrapped__ = method
        setattr(model, name, replicated)


class ProcessBatches(DerivedBatches):
    """This process's slice of every global batch of `inner` (see `process_batches`)."""

    def __init__(self, inner, num_devices: int, num_processes: int, process_index: int, scheme: str):
        super().__init__(inner)
        self.num_devices, self.num_processes = num_devices, num_processes
        self.process_index, self.scheme = process_index, scheme

    def __len__(self):
        inner, n = self.inner, len(self.inner)
        total = getattr(inner, "n", None)
        size = getattr(inner, "batch_size", None)
        if (
            n
            and total is not None
            and size
            and not getattr(inner, "drop_remainder", False)
            and (total - (n - 1) * size) % self.num_devices
        ):
            n -= 1
        return n

    def _check(self, g: int) -> int:
        if g % self.num_devices:
            raise DistributeError(
                f"a training batch of {g} images does not split over the "
                f"{self.num_devices} devices of distribute.scheme={self.scheme!r}"
            )
        return g // self.num_processes

    def __getitem__(self, i):
        inner = self.inner
        if hasattr(inner, "batch_indices") and hasattr(inner, "rows"):
            # Read only this process's rows of the global batch: every process
            # reading (and copying) all of it would multiply the host's work by
            # the number of processes.
            return self._share(inner.batch_indices(i))
        batch = inner[i]
        arrays = batch if isinstance(batch, tuple) else (batch,)
        k = self._check(len(arrays[0]))
        lo = self.process_index * k
        out = tuple(None if a is None else np.asarray(a)[lo : lo + k] for a in arrays)
        return out if isinstance(batch, tuple) else out[0]

    def _share(self, idx):
        k = self._check(len(idx))
        lo = self.process_index * k
        return self.inner.rows(idx[lo : lo + k])

    def batch_at(self, epoch: int, i: int):
        """This process's rows of step i of `epoch` of batches indexed by (epoch,
        step) (`data.batches.StepFeed` reads them so)."""
        return self._share(self.inner.indices_at(epoch, i))


def process_batches(inner, num_devices: int, num_processes: int = 1, process_index: int = 0, scheme: str = ""):
    """This process's slice of every global batch of the PyDataset ``inner``.

    Process ``p`` of ``P`` gets rows ``[p*G/P, (p+1)*G/P)`` of each global batch of
    ``G`` images, so together the processes feed exactly the global batch (JAX
    data parallelism: ``jax.make_array_from_process_local_data`` assembles it). A
    final batch that does not split evenly over all ``num_devices`` is dropped.

    A stream (``StreamBatches``) is split record by record instead: each process
    decodes only its share of each global batch (``StreamBatches.for_process``),
    the same images as one process's batch in another row order.
    """
    size = getattr(inner, "batch_size", None)
    if size is not None and size % num_devices:
        raise DistributeError(
            f"train.batch_size={size} does not split evenly over the {num_devices} devices "
            f"of distribute.scheme={scheme!r} on JAX; use a multiple of {num_devices} "
            "(the paper's 128 splits over 2, 4, 8, ... devices)"
        )
    if isinstance(inner, StreamBatches):
        return inner.for_process(num_processes, process_index) if num_processes > 1 else inner
    return ProcessBatches(inner, num_devices, num_processes, process_index, scheme)
