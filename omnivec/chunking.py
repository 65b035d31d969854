"""Split text into pieces that fit an encoder's context, keeping character offsets.

Nothing is silently truncated: every character of the text lands in at least one chunk.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

_WORD = re.compile(r"\S+")
LONG_WORD_CHARS = 256


@dataclass(frozen=True, slots=True)
class Chunk:
    text: str
    start: int  # character offset in the decoded text (inclusive)
    end: int  # exclusive


def _word_spans(text: str, count: Callable[[str], int], max_tokens: int) -> list[tuple[int, int, int]]:
    """(start, end, tokens) per whitespace-separated word; over-long words cut into pieces."""
    spans: list[tuple[int, int, int]] = []
    # a character is at most 4 UTF-8 bytes and byte-level tokenizers spend at most one token per byte
    piece = max(1, max_tokens // 4)
    # a word longer than this is cut without being counted whole: BPE tokenizers are quadratic in the
    # length of a word (a 100 KB word would take minutes), and no real word that long fits anyway
    long_word = max(LONG_WORD_CHARS, 4 * max_tokens)
    for m in _WORD.finditer(text):
        start, end = m.span()
        n = count(text[start:end]) if end - start <= long_word else max_tokens + 1
        if n <= max_tokens:
            spans.append((start, end, n))
            continue
        for s in range(start, end, piece):
            e = min(end, s + piece)
            spans.append((s, e, count(text[s:e])))
    return spans


def chunk_text(
    text: str,
    count_tokens: Callable[[str], int],
    max_tokens: int,
    overlap_tokens: int = 0,
) -> list[Chunk]:
    """Greedy word-aligned chunks of at most ``max_tokens`` tokens, sharing ~``overlap_tokens``.

    ``count_tokens`` counts the tokens of a string without special tokens.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    overlap_tokens = min(overlap_tokens, max_tokens // 2)
    spans = _word_spans(text, count_tokens, max_tokens)
    if not spans:
        return []
    if spans[-1][1] - spans[0][0] < 4 * max_tokens or len(spans) == 1:
        whole = text[spans[0][0] : spans[-1][1]]
        if count_tokens(whole) <= max_tokens:
            return [Chunk(whole, spans[0][0], spans[-1][1])]
    chunks: list[Chunk] = []
    i = 0
    while i < len(spans):
        total, j = 0, i
        while j < len(spans) and total + spans[j][2] <= max_tokens:
            total += spans[j][2]
            j += 1
        j = max(j, i + 1)
        # joined text can tokenize differently from the sum of its words: shrink until it fits
        while j > i + 1 and count_tokens(text[spans[i][0] : spans[j - 1][1]]) > max_tokens:
            j -= 1
        chunks.append(Chunk(text[spans[i][0] : spans[j - 1][1]], spans[i][0], spans[j - 1][1]))
        if j >= len(spans):
            break
        # step back over up to overlap_tokens tokens, always moving forward
        back, k = 0, j
        while k - 1 > i and back + spans[k - 1][2] <= overlap_tokens:
            back += spans[k - 1][2]
            k -= 1
        i = k
    return chunks
