"""The corpus: the store -> versioned ``danmaku_text_pure.txt`` files anyone can cite.

In the order a danmaku passes them: ``export_reader`` (the ordered scan of the
store), ``lines`` (one line per danmaku), ``options`` (eval split, trims),
``documents`` (the vocabulary filter and the options, per document),
``corpus_file`` (bytes and sha256), ``parallel`` (``workers > 1``), ``manifest``
(the version), ``export`` (runs them and puts the corpus in place).
"""
