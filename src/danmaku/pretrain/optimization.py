"""Google's pretraining optimizer and schedule, as Keras 3 optimizers.

``AdamWeightDecay`` is ``optimization.AdamWeightDecayOptimizer`` of Google's
BERT: Adam *without* bias correction, epsilon 1e-6, and decoupled weight decay
``update += rate * w`` on every variable except LayerNorm and bias. Keras'
``AdamW`` bias-corrects, so its first thousands of steps differ; hence this
class. ``Lamb`` is the layer-wise adaptive variant (You et al., 2019) for very
large batches: the same update, scaled per variable by ``||w|| / ||update||``.
Both clip by global norm 1.0 (``global_clipnorm``), as ``create_optimizer`` does.

``WarmupLinearDecay`` is Google's learning rate: linear decay from
``init_lr`` to 0 at ``num_train_steps``, and during the first
``num_warmup_steps`` a linear warm-up ``init_lr * step / num_warmup_steps``
(so step 0 trains with lr 0, exactly as Google's). ``decay_fraction`` f < 1
holds the peak and decays linearly to 0 over the last f of the steps only
(warm-up, stable, decay: Hägele et al. 2024, MiniCPM); f = 1 is Google's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import keras
from keras import ops

# Google's exclude_from_weight_decay for pretraining.
NO_DECAY = ("LayerNorm", "layer_norm", "bias")


@keras.saving.register_keras_serializable(package="danmaku")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Google's ``polynomial_decay(power=1, end=0)`` with linear warm-up (or its last-fraction variant)."""

    def __init__(self, init_lr: float, num_train_steps: int, num_warmup_steps: int = 0,
                 decay_fraction: float = 1.0) -> None:
        if not 0 < decay_fraction <= 1:
            raise ValueError(f"decay_fraction must be in (0, 1], got {decay_fraction:g}")
        self.init_lr = float(init_lr)
        self.num_train_steps = int(num_train_steps)
        self.num_warmup_steps = int(num_warmup_steps)
        self.decay_fraction = float(decay_fraction)

    def __call__(self, step: Any) -> Any:
        return self._rate(ops.cast(step, "float32"), float(max(self.num_train_steps, 1)))

    def _rate(self, step: Any, total: Any) -> Any:
        left = 1.0 - ops.minimum(step, total) / total  # Google's
        decayed = self.init_lr * (left if self.decay_fraction == 1.0
                                  else ops.minimum(1.0, left / self.decay_fraction))
        if not self.num_warmup_steps:
            return decayed
        warm = self.init_lr * step / float(self.num_warmup_steps)
        return ops.where(step < float(self.num_warmup_steps), warm, decayed)

    def get_config(self) -> dict[str, Any]:
        return {"init_lr": self.init_lr, "num_train_steps": self.num_train_steps,
                "num_warmup_steps": self.num_warmup_steps, "decay_fraction": self.decay_fraction}


def decayed_variables(model) -> list:
    """Model variables that get weight decay: Google's names not matching ``NO_DECAY``."""
    from danmaku.pretrain.checkpoints import _slots

    return [s.variable for s in _slots(model) if not any(re.search(p, s.name) for p in NO_DECAY)]


class _GoogleAdamBase(keras.optimizers.Optimizer):
    def __init__(self, learning_rate: Any = 1e-4, *, weight_decay_rate: float = 0.01, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-6, decay_variables: Iterable = (),
                 global_clipnorm: float | None = 1.0, name: str = "adam_weight_decay", **kwargs: Any) -> None:
        super().__init__(learning_rate=learning_rate, global_clipnorm=global_clipnorm, name=name, **kwargs)
        self.weight_decay_rate = weight_decay_rate
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self._decay_variables = list(decay_variables)
        self._decay_keys: set[int] = set()

    def _decays(self, variable: Any) -> bool:
        # The backend hands update_step its own variable objects (tf.Variable under
        # TensorFlow), so match by the optimizer's variable key, not identity.
        return self._var_key(variable) in self._decay_keys

    def build(self, var_list: list) -> None:
        if self.built:
            return
        super().build(var_list)
        self._decay_keys = {self._var_key(v) for v in self._decay_variables}
        self._m, self._v = self.add_optimizer_variables(var_list, ["adam_m", "adam_v"])

    def _adam_update(self, gradient: Any, variable: Any, bias_correction: bool) -> Any:
        index = self._get_variable_index(variable)
        m, v = self._m[index], self._v[index]
        g = ops.cast(gradient, variable.dtype)
        self.assign(m, self.beta_1 * m + (1.0 - self.beta_1) * g)
        self.assign(v, self.beta_2 * v + (1.0 - self.beta_2) * ops.square(g))
        m_hat, v_hat = m, v
        if bias_correction:
            t = ops.cast(self.iterations + 1, variable.dtype)
            m_hat = m / (1.0 - ops.power(self.beta_1, t))
            v_hat = v / (1.0 - ops.power(self.beta_2, t))
        update = m_hat / (ops.sqrt(v_hat) + self.epsilon)
        if self.weight_decay_rate and self._decays(variable):
            update = update + self.weight_decay_rate * variable
        return update

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(weight_decay_rate=self.weight_decay_rate, beta_1=self.beta_1, beta_2=self.beta_2,
                      epsilon=self.epsilon)
        return config


class AdamWeightDecay(_GoogleAdamBase):
    """Google BERT's ``AdamWeightDecayOptimizer`` (no bias correction, decoupled decay).

    Args:
        learning_rate: a float or ``WarmupLinearDecay``.
        weight_decay_rate: 0.01 in Google's pretraining.
        decay_variables: the variables that get weight decay (``decayed_variables(model)``).
        global_clipnorm: clip by global norm before the update (Google: 1.0).

    Example:
        >>> opt = AdamWeightDecay(WarmupLinearDecay(2e-5, 12000, 1200),
        ...                       decay_variables=decayed_variables(model))
    """

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        update = self._adam_update(gradient, variable, bias_correction=False)
        self.assign_sub(variable, ops.cast(learning_rate, variable.dtype) * update)


class Lamb(_GoogleAdamBase):
    """LAMB: Adam (bias-corrected) + decay, scaled per variable by ``||w|| / ||update||``.

    As in the LAMB paper's BERT setup, variables without weight decay
    (LayerNorm, bias) also skip the layer-wise adaptation.
    """

    def __init__(self, learning_rate: Any = 1e-3, *, name: str = "lamb", **kwargs: Any) -> None:
        super().__init__(learning_rate, name=name, **kwargs)

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        update = self._adam_update(gradient, variable, bias_correction=True)
        ratio = 1.0
        if self._decays(variable):
            w_norm = ops.sqrt(ops.sum(ops.square(variable)))
            u_norm = ops.sqrt(ops.sum(ops.square(update)))
            ratio = ops.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, 1.0)
        self.assign_sub(variable, ops.cast(learning_rate, variable.dtype) * ratio * update)


OPTIMIZERS = {"adamw": AdamWeightDecay, "lamb": Lamb}


def create_optimizer(model, name: str, learning_rate: float, num_train_steps: int, num_warmup_steps: int,
                     *, weight_decay_rate: float = 0.01, clip_norm: float | None = 1.0,
                     loss_scale: bool = False) -> keras.optimizers.Optimizer:
    """Google's ``create_optimizer`` for ``model``: schedule, decay exclusions, clipping."""
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}") from None
    optimizer = cls(WarmupLinearDecay(learning_rate, num_train_steps, num_warmup_steps),
                    weight_decay_rate=weight_decay_rate, decay_variables=decayed_variables(model),
                    global_clipnorm=clip_norm)
    if loss_scale:  # fp16: dynamic loss scaling, steps with inf/nan gradients are skipped
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
