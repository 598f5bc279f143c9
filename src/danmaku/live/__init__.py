"""Live-stream chat recorder: Bilibili rooms' chat straight into the store, always on.

Reading order: ``protocol`` (the 16-byte packet framing, zlib/brotli bodies --
pure), ``messages`` (the commands kept: danmaku, super chats, LIVE, PREPARING;
the message identity that makes writes idempotent), ``api`` (``room_init``,
WBI-signed ``getDanmuInfo`` with device cookies), ``client`` (one room's
websocket, heartbeats, reconnects), ``broadcasts`` (which source a message
belongs to), ``storage`` (the batched store writer), ``export`` (community text
tree, BililiveRecorder XML), ``recorder`` (many rooms, one process),
``rooms`` (room ids and rooms files as users write them), ``status``
(``danmaku live status``'s figures).
"""
