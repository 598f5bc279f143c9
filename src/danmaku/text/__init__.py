"""Model-side text processing shared by every stage: Google's BERT tokenizer, exactly, and
the vocabulary filter that decides which danmaku a corpus keeps. A leaf package."""
