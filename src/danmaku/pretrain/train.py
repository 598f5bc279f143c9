"""``danmaku pretrain train``: continued (or from-scratch) BERT pretraining, resumable.

One optimizer step consumes ``batch_size`` instances. Each replica of the
``tf.distribute`` strategy gets ``batch_size / replicas`` of them and walks
through them in micro-batches of ``micro_batch_size``, summing gradients, so
a batch of 2048 (the study's) runs on any device; the summed gradients are
averaged, all-reduced by the strategy and applied once (Google's optimizer:
clip to global norm 1.0, AdamWeightDecay or LAMB, warm-up then linear decay).

A run directory holds everything needed to continue::

    RUN_DIR/run.json          settings, architecture, instances, seed
    RUN_DIR/bert_config.json  Google's config of the model
    RUN_DIR/vocab.txt         the vocabulary of the instances
    RUN_DIR/checkpoints/      tf.train checkpoints: weights, optimizer slots, step,
                              dropout RNG state (``ckpt-N``, the newest few kept)
    RUN_DIR/logs/             TensorBoard scalars
    RUN_DIR/model.ckpt-N.*    when finished: the weights as Google's checkpoint
    RUN_DIR/initial/          a from-scratch run's initial weights (Google model dir):
                              the "before" of ``danmaku pretrain eval``

Resuming (running the same command again, e.g. after a kill) restores the
newest intact checkpoint (``danmaku.pretrain.recovery``) -- weights, optimizer
slots and iterations, step, dropout RNG state -- and skips exactly the
instances already consumed, so it continues as the uninterrupted run would.
With ``deterministic=True`` two runs are bit-equal; a resumed one matches to
float rounding (~1e-8 on CPU, where kernels round differently in a new process).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from danmaku.artifacts import (
    GOOGLE_CONFIG,
    RUN_CHECKPOINTS,
    RUN_MANIFEST,
    VOCAB,
    ArtifactMismatch,
    RunManifest,
)
from danmaku.pretrain.config import POSITION_INITS, BertConfig
from danmaku.pretrain.loading import vocab_size_of

INITIAL_DIR = "initial"

RUN_FORMAT = RunManifest.FORMAT
STRATEGIES = ("default", "mirrored", "tpu")
PRECISIONS = {None: None, "fp32": None, "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


class RunError(ValueError):
    """A user error about the run directory or its inputs."""


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the result of a run (stored in ``run.json``)."""

    steps: int = 1000
    batch_size: int = 32
    micro_batch_size: int | None = None  # per replica; default min(batch per replica, 64)
    learning_rate: float = 1e-4
    warmup_steps: int | None = None  # default: 10% of steps
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    seed: int = 12345
    shuffle_buffer: int = 10_000
    beta_2: float = 0.999  # Google's AdamWeightDecay
    epsilon: float = 1e-6
    fit_minutes: float | None = None  # end the schedule at this much training time (``budget.py``)
    position_init: str = "random"  # or "sinusoidal" (``model.sinusoidal_positions``); a new run only
    nsp_weight: float = 1.0  # of the next-sentence loss in the training loss (Google: 1; 0: masked LM only)
    zero_init_layers: int = 0  # last N layers: residual outputs start at 0 (``model.zero_residual_outputs``)
    decay_fraction: float = 1.0  # the rate decays over the last fraction of the steps (Google: 1, all)

    @property
    def num_warmup_steps(self) -> int:
        return self.warmup_steps if self.warmup_steps is not None else int(0.1 * self.steps)

    def __post_init__(self) -> None:
        if self.fit_minutes is not None and self.fit_minutes <= 0:
            raise RunError(f"--fit-minutes must be positive, got {self.fit_minutes}")
        if not 0 <= self.beta_2 < 1 or self.epsilon <= 0:
            raise RunError(f"need 0 <= beta_2 < 1 and epsilon > 0, got {self.beta_2}, {self.epsilon}")
        if self.nsp_weight < 0:
            raise RunError(f"--nsp-weight must be >= 0, got {self.nsp_weight:g}")
        if not 0 < self.decay_fraction <= 1:
            raise RunError(f"--decay-fraction must be in (0, 1], got {self.decay_fraction:g}")
        if self.zero_init_layers < 0:
            raise RunError(f"--zero-init-layers must be >= 0, got {self.zero_init_layers}")
        if self.position_init not in POSITION_INITS:
            raise RunError(f"--position-init must be one of {', '.join(POSITION_INITS)}, "
                           f"got {self.position_init!r}")


@dataclass(frozen=True)
class RunOptions:
    """How to run (may change between a run and its resumption)."""

    mixed_precision: str | None = None  # bf16 | fp16
    xla: bool = False
    strategy: str = "default"
    tpu: str | None = None
    save_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 10
    max_minutes: float | None = None
    deterministic: bool = False
    cpu_threads: int | None = None  # N: one inter-op, N intra-op threads (``configure_cpu_threads``)


# The study (../shared/docs/seed.md): batch 2048 for 12,000 steps at sequence
# length 128 from Google's checkpoint. Its learning rate is not recorded; we use
# Google's README value for continuing from a released checkpoint (2e-5) with
# Google's 10% warm-up and linear decay.
RECIPES: dict[str, dict[str, Any]] = {
    "study": dict(batch_size=2048, steps=12_000, learning_rate=2e-5, warmup_steps=1_200),
    "tiny": dict(batch_size=32, steps=300, learning_rate=1e-3, warmup_steps=30),
}


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    resumed_from: int
    stopped: str  # "done" | "time budget"
    history: list[dict[str, float]] = field(default_factory=list)
    total_steps: int = 0  # the schedule's end: ``steps``, or the fitted total of a ``fit_minutes`` run
    sequences: int = 0  # instances trained on by the end of this call (step x batch size)


# ---------------------------------------------------------------------------
# Run directory
# ---------------------------------------------------------------------------
def init_run(run_dir: Path, *, instances_dir: Path, config: BertConfig, settings: TrainSettings,
             init_checkpoint: str | None) -> dict[str, Any]:
    """Create ``run_dir`` (or check that an existing one was started the same way)."""
    from danmaku.pretrain.data import open_instances

    run_dir = Path(run_dir)
    instances = open_instances(instances_dir)
    manifest = {
        "format": RUN_FORMAT,
        "instances": str(Path(instances_dir).resolve()),
        "settings": asdict(settings),
        "bert_config": config.to_dict(),
        "init_checkpoint": init_checkpoint,
    }
    try:
        old = RunManifest.require_same(
            run_dir, manifest, ("instances", "settings", "bert_config", "init_checkpoint"),
            hint="resume it with the same arguments (or just `danmaku pretrain train --out RUN_DIR`) "
                 "or use a new --out", normalise=_with_new_defaults)
    except ArtifactMismatch as error:
        raise RunError(str(error)) from None
    if old is not None:
        return old
    vocab = instances.vocab_path
    if not vocab.is_file():
        raise RunError(f"{instances_dir} has no vocab.txt; re-run `danmaku pretrain prepare`")
    if vocab_size_of(vocab) != config.vocab_size:
        raise RunError(f"vocab/config mismatch: the instances' vocab has {vocab_size_of(vocab)} tokens, "
                       f"the model config vocab_size={config.vocab_size}")
    if instances.max_seq_length > config.max_position_embeddings:
        raise RunError(f"instances are {instances.max_seq_length} tokens long but the model has only "
                       f"{config.max_position_embeddings} positions")
    if settings.zero_init_layers > config.num_hidden_layers:
        raise RunError(f"--zero-init-layers {settings.zero_init_layers} is more than the model's "
                       f"{config.num_hidden_layers} encoder layers")
    if settings.zero_init_layers and init_checkpoint:
        raise RunError("--zero-init-layers starts a fresh model; --init-checkpoint brings its own weights")
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vocab, run_dir / VOCAB)
    config.to_json_file(run_dir / GOOGLE_CONFIG)
    RunManifest.write(run_dir, manifest)
    return manifest


def _with_new_defaults(old: dict[str, Any]) -> dict[str, Any]:
    """A run from before a setting existed has that setting's default."""
    if isinstance(old.get("settings"), dict):
        return old | {"settings": asdict(TrainSettings(**old["settings"]))}
    return old


def load_run(run_dir: Path) -> dict[str, Any]:
    if not RunManifest.exists(run_dir):
        raise RunError(f"{run_dir} is not a run directory (no {RunManifest.NAME})")
    manifest = RunManifest.read(run_dir)
    if manifest is None:
        raise RunError(f"{RunManifest.path(run_dir)} is unreadable or not a run manifest")
    return manifest


def _check_init_vocab(init_checkpoint: str, instances_vocab: Path) -> None:
    """An init checkpoint's vocab.txt (when beside it) must be the instances' vocabulary."""
    beside = Path(init_checkpoint).parent / VOCAB
    if beside.is_file() and beside.read_bytes() != instances_vocab.read_bytes():
        raise RunError(f"vocab mismatch: {beside} differs from the vocabulary the instances were made with "
                       f"({instances_vocab})")


# ---------------------------------------------------------------------------
# Trainer
# ---------------------------------------------------------------------------
def configure_cpu_threads(threads: int | None = None) -> tuple[int, int] | None:
    """``threads`` intra-op threads and one inter-op thread; ``None`` keeps TensorFlow's pools.

    TensorFlow's default on 2 cores is an inter-op pool of one thread per core
    beside the intra-op pool (plus tf.data's), which on a busy machine could
    spin and preempt the matmul threads. Measured (``bench/pretrain.py``,
    2 cores at load 4-5): 17.9 seq/s with one inter-op thread vs 18.4 with
    TensorFlow's pools, 1% kernel time either way -- no gain, so the default
    stays TensorFlow's and this is an option (``RunOptions.cpu_threads``).
    Only possible before TensorFlow runs its first op in the process; later
    calls keep the pools as they are and return ``None``.
    """
    import tensorflow as tf

    if not threads:
        return None
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime is initialised already
        return None
    return 1, threads


def make_strategy(name: str, tpu: str | None = None):
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise RunError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}")


class Trainer:
    """Model, optimizer, checkpoint and the compiled training step of one run."""

    def __init__(self, run_dir: Path, config: BertConfig, settings: TrainSettings, options: RunOptions,
                 *, seq: int, pred: int) -> None:
        import keras
        import tensorflow as tf

        from danmaku.pretrain.model import BertPretrainer

        if options.mixed_precision not in PRECISIONS:
            raise RunError(f"--mixed-precision must be bf16 or fp16, got {options.mixed_precision!r}")
        self.run_dir, self.config, self.settings, self.options = Path(run_dir), config, settings, options
        self.seq, self.pred = seq, pred
        self.threads = configure_cpu_threads(options.cpu_threads)
        keras.utils.set_random_seed(settings.seed)
        if options.deterministic:
            tf.config.experimental.enable_op_determinism()
        self.strategy = make_strategy(options.strategy, options.tpu)
        replicas = self.strategy.num_replicas_in_sync
        if settings.batch_size % replicas:
            raise RunError(f"batch size {settings.batch_size} is not divisible by {replicas} replicas")
        per_replica = settings.batch_size // replicas
        micro = settings.micro_batch_size or min(per_replica, 64)
        if per_replica % micro:
            raise RunError(f"batch per replica {per_replica} is not a multiple of the micro-batch {micro}")
        self.micro, self.accum, self.replicas = micro, per_replica // micro, replicas
        policy = PRECISIONS[options.mixed_precision]
        with self.strategy.scope():
            self.model = BertPretrainer.from_bert_config(config, dtype=policy,
                                                         position_init=settings.position_init,
                                                         zero_init_layers=settings.zero_init_layers)
            self.model(self._dummy_inputs(2), training=False)
            self.optimizer = self._optimizer()
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="dd_step")
        rng_states = [v for v in self.model.variables if v.name == "seed_generator_state"]
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer, step=self.step,
                                              dropout_rng=rng_states)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(self.run_dir / RUN_CHECKPOINTS), max_to_keep=options.keep_checkpoints,
            checkpoint_name="ckpt", step_counter=self.step)
        self._step_fn = self._build_step()

    def _optimizer(self):
        """Google's ``create_optimizer`` (``optimization.py``) with the run's Adam constants and schedule.

        Clipping happens in the step, over all replicas (see ``_build_step``). A
        ``fit_minutes`` run gets ``FittedWarmupLinearDecay`` (same function, end step
        decided after the probe, ``budget.py``).
        """
        import keras

        from danmaku.pretrain.budget import fitted_learning_rate
        from danmaku.pretrain.optimization import OPTIMIZERS, WarmupLinearDecay, decayed_variables

        s = self.settings
        if s.optimizer not in OPTIMIZERS:
            raise RunError(f"unknown optimizer {s.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        make = fitted_learning_rate if s.fit_minutes else WarmupLinearDecay
        self.schedule = make(s.learning_rate, s.steps, s.num_warmup_steps, s.decay_fraction)
        optimizer = OPTIMIZERS[s.optimizer](
            self.schedule, weight_decay_rate=s.weight_decay, decay_variables=decayed_variables(self.model),
            global_clipnorm=None, beta_2=s.beta_2, epsilon=s.epsilon)
        if self.options.mixed_precision == "fp16":  # dynamic loss scaling, inf/nan steps skipped
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer

    def set_total_steps(self, steps: int) -> None:
        """Move the end of a fitted schedule (``budget.py``); the compiled step reads it."""
        self.schedule.set_total(steps)

    def _dummy_inputs(self, batch: int) -> dict[str, Any]:
        import numpy as np

        zeros = np.zeros((batch, self.seq), np.int32)
        return {"token_ids": zeros, "segment_ids": zeros, "padding_mask": zeros + 1,
                "mask_positions": np.zeros((batch, self.pred), np.int32)}

    # -- state -------------------------------------------------------------
    def restore_or_init(self, init_checkpoint: str | None,
                        on_notice: Callable[[str], None] | None = None) -> int:
        """Resume from the newest intact checkpoint, else load ``init_checkpoint`` weights; the step.

        Damaged newer checkpoints are skipped with a notice (``danmaku.pretrain.recovery``).
        """
        from danmaku.pretrain.recovery import newest_intact

        latest = newest_intact(self.run_dir / RUN_CHECKPOINTS, self.manager.checkpoints, on_notice)
        if latest:
            self.checkpoint.restore(str(latest)).assert_existing_objects_matched()
            return int(self.step.numpy())
        if init_checkpoint:
            from danmaku.pretrain.checkpoints import assign_google_weights, read_google_checkpoint

            weights = read_google_checkpoint(init_checkpoint)
            missing = assign_google_weights(self.model, weights, source=f"init checkpoint {init_checkpoint}")
            if missing and on_notice:
                on_notice(f"init checkpoint has no pretraining heads ({len(missing)} cls/ variables): "
                          "they start from random")
        return 0

    def save(self) -> str:
        return self.manager.save(checkpoint_number=int(self.step.numpy()))

    # -- the step ----------------------------------------------------------
    def _build_step(self) -> Callable:
        import tensorflow as tf

        from danmaku.pretrain.losses import SUM_KEYS, pretraining_losses
        from danmaku.pretrain.model import pack_labels

        model, optimizer = self.model, self.optimizer
        accum, micro, replicas = self.accum, self.micro, self.replicas
        fp16 = self.options.mixed_precision == "fp16"
        clip_norm = self.settings.clip_norm
        nsp_weight = self.settings.nsp_weight
        variables = model.trainable_variables
        # XLA (--xla, and always on a TPU) needs static shapes; the packed head's slot
        # count moves with each batch.
        packed = not (self.options.xla or self.options.strategy == "tpu")

        def grads_of(inputs, labels):
            with tf.GradientTape() as tape:
                if packed:
                    outputs, keep = model.packed_outputs(inputs, labels["masked_lm_weights"], training=True)
                    labels = pack_labels(labels, keep)
                else:
                    outputs = model(inputs, training=True)
                values = pretraining_losses(outputs, labels, nsp_weight=nsp_weight)
                loss = values["loss"] / float(accum * replicas)
                if fp16:
                    loss = optimizer.scale_loss(loss)
            # nsp_weight 0 leaves the pooler and the NSP head out of the loss: like Google's
            # optimizer (which skips a None gradient) they are then not updated, nor decayed.
            grads = tape.gradient(loss, variables)
            live = tuple(i for i, g in enumerate(grads) if g is not None)
            dense = [tf.convert_to_tensor(grads[i]) for i in live]  # dense: summable
            return live, dense, {k: values[k] for k in ("loss", *SUM_KEYS)}

        def replica_step(inputs, labels):
            def chunk(tree, k):
                return {name: t[k * micro:(k + 1) * micro] for name, t in tree.items()}

            live, grads, sums = grads_of(chunk(inputs, 0), chunk(labels, 0))
            for k in tf.range(1, accum):
                _, more, more_sums = grads_of(chunk(inputs, k), chunk(labels, k))
                grads = [a + b for a, b in zip(grads, more, strict=True)]
                sums = {name: sums[name] + more_sums[name] for name in sums}
            # Clip the gradient of the whole batch, as on one device: all-reduce first
            # (Keras would clip each replica's part before summing), then hand Keras
            # 1/replicas of it, which its own all-reduce sums back.
            if replicas > 1:
                grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
            if clip_norm:
                limit = clip_norm * (optimizer.dynamic_scale if fp16 else 1.0)  # fp16: grads are scaled
                grads, _ = tf.clip_by_global_norm(grads, limit)
            if replicas > 1:
                grads = [g / float(replicas) for g in grads]
            optimizer.apply_gradients(zip(grads, [variables[i] for i in live], strict=True))
            return sums

        compiled = tf.function(replica_step, jit_compile=self.options.xla or None)

        @tf.function
        def step(iterator):
            inputs, labels = next(iterator)
            per_replica = self.strategy.run(compiled, args=(inputs, labels))
            self.step.assign_add(1)
            return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                    for k, v in per_replica.items()}

        return step

    def dataset(self, files: list[str], skip_records: int):
        from danmaku.pretrain.data import train_dataset

        ds = train_dataset(files, self.settings.batch_size, self.seq, self.pred, seed=self.settings.seed,
                           skip_records=skip_records, shuffle_buffer=self.settings.shuffle_buffer)
        return self.strategy.experimental_distribute_dataset(ds)

    def train_step(self, iterator) -> dict[str, float]:
        """One optimizer step; returns the metric sums and the mean training loss."""
        sums = {k: float(v) for k, v in self._step_fn(iterator).items()}
        sums["loss"] /= self.accum * self.replicas
        return sums

    def learning_rate(self) -> float:
        inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        return float(inner.learning_rate)


# ---------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------
def _resolve_init(init_checkpoint: str | None) -> str | None:
    """A checkpoint prefix from a prefix, or from a Google/export dir (its newest checkpoint)."""
    if not init_checkpoint:
        return None
    from danmaku.pretrain.checkpoints import checkpoint_exists, newest_checkpoint

    path = Path(init_checkpoint)
    if checkpoint_exists(path):
        return str(path)
    if path.is_dir():
        prefix = path / "bert_model.ckpt"
        found = prefix if checkpoint_exists(prefix) else newest_checkpoint(path)
        if found:
            return str(found)
    raise RunError(f"init checkpoint not found: {init_checkpoint} (give the prefix, e.g. "
                   "chinese_L-12_H-768_A-12/bert_model.ckpt, or its directory)")


def train(run_dir: str | Path, *, instances_dir: str | Path | None = None, config: BertConfig | None = None,
          settings: TrainSettings | None = None, options: RunOptions | None = None,
          init_checkpoint: str | None = None,
          on_begin: Callable[[int, int], None] | None = None,
          on_step: Callable[[int, dict[str, float]], None] | None = None,
          on_notice: Callable[[str], None] | None = None) -> TrainResult:
    """Train (or resume) the run in ``run_dir``; see the module docstring.

    A new run needs ``instances_dir`` and ``config``; an existing run resumes
    from its ``run.json`` (given arguments must agree with it). Progress goes
    to the callbacks: ``on_begin(start_step, total_steps)`` once, ``on_step(step,
    metrics)`` every ``log_every`` steps, ``on_notice(text)`` for anything a user
    should read; nothing is printed here.
    """
    import tensorflow as tf

    from danmaku.pretrain.data import find_corrupt_shard, open_instances

    run_dir = Path(run_dir)
    options = options or RunOptions()
    if (run_dir / RUN_MANIFEST).is_file() and instances_dir is None:
        manifest = load_run(run_dir)
        instances_dir = manifest["instances"]
        config = BertConfig.from_dict(manifest["bert_config"])
        settings = TrainSettings(**manifest["settings"])
        init_checkpoint = manifest["init_checkpoint"]
    else:
        if instances_dir is None or config is None:
            raise RunError("a new run needs --instances and a model (--preset, --bert-config or "
                           "--init-checkpoint)")
        settings = settings or TrainSettings()
        init_checkpoint = _resolve_init(init_checkpoint)
        manifest = init_run(run_dir, instances_dir=Path(instances_dir), config=config, settings=settings,
                            init_checkpoint=init_checkpoint)
    assert config is not None and settings is not None
    if settings.steps < 1 or settings.batch_size < 1:
        raise RunError("--steps and --batch-size must be positive")
    instances = open_instances(instances_dir)
    if init_checkpoint:
        _check_init_vocab(init_checkpoint, instances.vocab_path)
    files = instances.files("train")
    _check_shards(files, instances.count("train"))

    trainer = Trainer(run_dir, config, settings, options, seq=instances.max_seq_length,
                      pred=instances.max_predictions)
    start = trainer.restore_or_init(init_checkpoint, on_notice)
    if start == 0 and not init_checkpoint:
        _save_initial(trainer, run_dir)
    from danmaku.pretrain.budget import (
        PROBE_FROM,
        fit_steps,
        load_schedule,
        probe_window,
        refit,
        save_schedule,
    )

    total = settings.steps
    fitted = load_schedule(run_dir) if settings.fit_minutes else None
    probe = None
    if fitted:
        total = fitted.steps
        trainer.set_total_steps(total)
    elif settings.fit_minutes and probe_window(start)[1] < settings.steps:
        probe = probe_window(start)
    result = TrainResult(run_dir, start, start, "done", total_steps=total)
    if start >= total:
        result.sequences = start * settings.batch_size
        return result
    iterator = iter(trainer.dataset(files, skip_records=start * settings.batch_size))
    writer = tf.summary.create_file_writer(str(run_dir / "logs"))
    began = time.monotonic()
    window_start, window_steps = time.monotonic(), 0
    window = _Window()
    step = start
    probe_began = 0.0
    # Refitting the total during the stable phase (``budget.refit``): steps timed from ``mark`` on;
    # a resumed run starts timing past its tracing, as the probe does.
    refitting = settings.decay_fraction < 1.0
    mark: tuple[int, float] | None = None
    if on_begin:
        on_begin(start, total)
    with writer.as_default():
        while step < total:
            try:
                sums = trainer.train_step(iterator)
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
                bad = find_corrupt_shard(files)
                if bad:
                    raise RunError(f"instance shard {bad} is corrupt; "
                                   "re-run `danmaku pretrain prepare`") from None
                raise RunError(f"cannot read the instances: {err.message}") from None
            step += 1
            if probe and step == probe[0]:
                probe_began = time.monotonic()
            elif probe and step == probe[1]:
                assert settings.fit_minutes is not None
                per_step = (time.monotonic() - probe_began) / (probe[1] - probe[0])
                fitted = fit_steps(settings.fit_minutes, per_step, settings.steps, probe)
                save_schedule(run_dir, fitted)
                total = result.total_steps = fitted.steps
                trainer.set_total_steps(total)
                probe = None
                mark = (step, time.monotonic())
                if on_begin:
                    on_begin(start, total)
                if on_notice:
                    on_notice(f"{total:,} steps fit {settings.fit_minutes:g} min of training "
                              f"({1 / fitted.seconds_per_step:.2f} steps/s over steps "
                              f"{fitted.probe[0]}-{fitted.probe[1]}); the learning rate decays to 0 there"
                              + ("; refitted to the speed of later steps until the decay begins"
                                 if refitting else ""))
            elif refitting and fitted is not None and not fitted.frozen:
                if mark is None and step == start + PROBE_FROM:
                    mark = (step, time.monotonic())
                elif mark is not None and step % options.log_every == 0:
                    now = time.monotonic()
                    before, fitted = fitted, refit(fitted, step, settings.decay_fraction, step - mark[0],
                                                   now - mark[1])
                    mark = (step, now)
                    if fitted.steps != before.steps:
                        total = result.total_steps = fitted.steps
                        trainer.set_total_steps(total)
                        if on_begin:
                            on_begin(start, total)
                    if fitted.frozen:
                        save_schedule(run_dir, fitted)
                        if on_notice:
                            begins = math.ceil(fitted.decay_start(settings.decay_fraction))
                            on_notice(f"the decay begins at step {begins:,}: {total:,} steps fit "
                                      f"{settings.fit_minutes:g} min of training "
                                      f"({1 / fitted.seconds_per_step:.2f} steps/s over "
                                      f"{fitted.timed_steps:,} timed steps)")
            window.add(sums)
            window_steps += 1
            if step % options.log_every == 0 or step == total:
                elapsed = time.monotonic() - window_start
                row = window.row(settings.batch_size * window_steps / max(elapsed, 1e-9))
                row["learning_rate"] = trainer.learning_rate()
                for name, value in row.items():
                    tf.summary.scalar(name, value, step=step)
                result.history.append({"step": step, **row})
                if on_step:
                    on_step(step, row)
                window, window_start, window_steps = _Window(), time.monotonic(), 0
            budget = options.max_minutes
            out_of_time = budget is not None and time.monotonic() - began > 60 * budget
            if step % options.save_every == 0 or step == total or out_of_time:
                trainer.save()
                if fitted is not None and refitting:
                    save_schedule(run_dir, fitted)  # the timings so far, for a resumed run's refit
            if out_of_time and step < total:
                result.stopped = "time budget"
                break
    writer.flush()
    result.step = step
    result.sequences = step * settings.batch_size
    if step >= total:
        # The finished model also as Google's model.ckpt-N beside bert_config.json and
        # vocab.txt: RUN_DIR works as bert-as-service's -tuned_model_dir as it is.
        from danmaku.pretrain.checkpoints import google_weights, write_google_checkpoint

        prefix = run_dir / f"model.ckpt-{step}"
        write_google_checkpoint(google_weights(trainer.model), prefix, global_step=step)
    return result


def _check_shards(files: list[str], instances: int) -> None:
    """Every shard training reads is whole, before step 1 (a streamed read, ~2-5 s per GB)."""
    from danmaku.pretrain.tfrecord_check import CorruptShard, verify_shards

    try:
        verify_shards(files, expected_records=instances)
    except CorruptShard as err:
        raise CorruptShard(f"{err}; run `danmaku pretrain prepare` again with the same arguments "
                           "to rebuild it") from None


def _save_initial(trainer: Trainer, run_dir: Path) -> None:
    """A from-scratch run's random initial weights as a Google model dir, ``RUN_DIR/initial``.

    They are the "before" of such a run (``danmaku pretrain eval RUN_DIR/initial``);
    a continued run's "before" is its init checkpoint, so nothing is copied then.
    """
    from danmaku.pretrain.checkpoints import google_weights, write_google_checkpoint

    initial = run_dir / INITIAL_DIR
    if (initial / GOOGLE_CONFIG).is_file():
        return
    staging = run_dir / f".{INITIAL_DIR}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    write_google_checkpoint(google_weights(trainer.model), staging / "model.ckpt-0", global_step=0)
    shutil.copyfile(run_dir / GOOGLE_CONFIG, staging / GOOGLE_CONFIG)
    shutil.copyfile(run_dir / VOCAB, staging / VOCAB)
    shutil.rmtree(initial, ignore_errors=True)
    staging.rename(initial)


class _Window:
    """Metric sums over the steps since the last log line."""

    def __init__(self) -> None:
        from danmaku.pretrain.losses import MetricSums

        self.sums = MetricSums()
        self.loss = 0.0
        self.steps = 0

    def add(self, values: dict[str, float]) -> None:
        self.sums.add(values)
        self.loss += values["loss"]
        self.steps += 1

    def row(self, seq_per_s: float) -> dict[str, float]:
        metrics = self.sums.metrics()
        loss = self.loss / max(self.steps, 1)
        return {"loss": loss if math.isfinite(loss) else float("nan"), **metrics,
                "sequences_per_second": seq_per_s}


def settings_for(recipe: str | None, **overrides: Any) -> TrainSettings:
    """A recipe's settings with explicit overrides (``None`` values ignored)."""
    base = TrainSettings()
    if recipe:
        if recipe not in RECIPES:
            raise RunError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
        base = replace(base, **RECIPES[recipe])
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
