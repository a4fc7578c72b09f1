"""The bottom floor of tmt: ideas every layer shares (modalities and directions, shard specs,
audio constants and loading, progress bars, JSONL and hypothesis-directory I/O, the tokenizer
protocol, devices). Modules here import nothing from tmt outside `tmt.core` and never torch at
import time."""
