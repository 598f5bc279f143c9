"""``danmaku demo``: the whole study on the shared sample (``pipeline``) and its report
(``report``)."""
