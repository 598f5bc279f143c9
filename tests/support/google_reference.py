"""Google's original BERT code (``bert-tensorflow``) as a test oracle.

Only its pure-Python parts run on TensorFlow 2: ``tokenization`` and
``create_pretraining_data``. They read absl flags at call time, so the flags are
marked parsed (with Google's defaults) before use. Never imported by danmaku itself.
"""

from __future__ import annotations

import functools
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@functools.cache
def _flags_ready() -> None:
    import bert.create_pretraining_data  # noqa: F401  (defines its flags)
    import bert.tokenization  # noqa: F401
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def tokenization():
    """Google's ``tokenization`` module, ready to use."""
    _flags_ready()
    import bert.tokenization

    return bert.tokenization


def create_pretraining_data():
    """Google's ``create_pretraining_data`` module, ready to use."""
    _flags_ready()
    import bert.create_pretraining_data

    return bert.create_pretraining_data


def full_tokenizer(vocab_path, do_lower_case: bool = True):
    return tokenization().FullTokenizer(str(vocab_path), do_lower_case=do_lower_case)
