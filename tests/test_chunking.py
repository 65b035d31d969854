"""Tests for omnivec.chunking.chunk_text: limits, offsets, coverage and overlap."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

import pytest

from omnivec.chunking import Chunk, chunk_text

Counter = Callable[[str], int]


def words(s: str) -> int:
    return len(s.split())


def chars(s: str) -> int:
    return len(s)


def utf8_bytes(s: str) -> int:  # a byte-level tokenizer's worst case
    return len(s.encode("utf-8"))


COUNTERS = {"words": words, "chars": chars, "bytes": utf8_bytes}


def random_text(seed: int, n_words: int) -> str:
    rng = random.Random(seed)
    vocab = ["a", "to", "cat", "house", "über", "naïve", "日本語", "encyclopaedia", "x" * 30]
    seps = [" ", " ", " ", "  ", "\n", "\n\n", "\t", " \n "]
    parts = []
    for _ in range(n_words):
        parts.append(rng.choice(vocab))
        parts.append(rng.choice(seps))
    return rng.choice(["", " ", "\n"]) + "".join(parts)


def assert_valid_chunks(text: str, chunks: list[Chunk], count: Counter, max_tokens: int) -> None:
    """The contract: fits, offsets exact, ordered, and nothing non-blank is lost."""
    assert chunks, "non-blank text must give at least one chunk"
    covered = bytearray(len(text))
    prev_start = -1
    for c in chunks:
        assert count(c.text) <= max_tokens, (c, count(c.text))
        assert 0 <= c.start < c.end <= len(text)
        assert text[c.start : c.end] == c.text
        assert c.text == c.text.strip(), "chunks start and end on non-space characters"
        assert c.start > prev_start, "chunks move forward"
        prev_start = c.start
        covered[c.start : c.end] = b"\x01" * (c.end - c.start)
    lost = [i for i, ch in enumerate(text) if not ch.isspace() and not covered[i]]
    assert lost == [], f"characters at {lost[:10]} are in no chunk"


def word_set(text: str, c: Chunk) -> list[tuple[int, int]]:
    return [m.span() for m in re.finditer(r"\S+", text[c.start : c.end])]


# --------------------------------------------------------------------------- trivial inputs


@pytest.mark.parametrize("text", ["", " ", "\n\t  \r\n", "\u3000 \u00a0"])
def test_blank_text_gives_no_chunks(text: str) -> None:
    assert chunk_text(text, words, max_tokens=10) == []


@pytest.mark.parametrize("count", [words, chars])
def test_short_text_is_one_chunk_equal_to_stripped_text(count: Counter) -> None:
    text = "  \n hello  big\nworld \t\n"
    chunks = chunk_text(text, count, max_tokens=50)
    assert len(chunks) == 1
    c = chunks[0]
    assert c.text == text.strip() == "hello  big\nworld"
    assert (c.start, c.end) == (4, 20)
    assert text[c.start : c.end] == c.text


def test_text_exactly_at_the_limit_is_one_chunk() -> None:
    text = " ".join(f"w{i}" for i in range(10))
    assert chunk_text(text, words, max_tokens=10) == [Chunk(text, 0, len(text))]


def test_one_word_over_the_limit_splits() -> None:
    text = " ".join(f"w{i}" for i in range(11))
    chunks = chunk_text(text, words, max_tokens=10)
    assert len(chunks) == 2
    assert_valid_chunks(text, chunks, words, 10)


@pytest.mark.parametrize("max_tokens", [0, -3])
def test_max_tokens_below_one_is_rejected(max_tokens: int) -> None:
    with pytest.raises(ValueError):
        chunk_text("some text", words, max_tokens=max_tokens)


# --------------------------------------------------------------------------- word counter


def test_word_counter_chunks_fit_and_cover() -> None:
    text = " ".join(f"word{i}" for i in range(1000))
    chunks = chunk_text(text, words, max_tokens=64)
    assert_valid_chunks(text, chunks, words, 64)
    assert len(chunks) == 16  # greedy: 15 full chunks of 64 words + 40 left
    assert all(words(c.text) == 64 for c in chunks[:-1])
    # without overlap every word is in exactly one chunk
    assert sum(words(c.text) for c in chunks) == 1000
    assert " ".join(c.text for c in chunks) == text


def test_chunks_are_word_aligned() -> None:
    text = random_text(7, 400)
    chunks = chunk_text(text, words, max_tokens=25, overlap_tokens=5)
    assert_valid_chunks(text, chunks, words, 25)
    for c in chunks:
        assert c.start == 0 or text[c.start - 1].isspace()
        assert c.end == len(text) or text[c.end].isspace()


# --------------------------------------------------------------------------- character counter


def test_char_counter_chunks_fit_and_cover() -> None:
    text = random_text(3, 500)
    chunks = chunk_text(text, chars, max_tokens=80)
    assert_valid_chunks(text, chunks, chars, 80)
    assert len(chunks) > 1


def test_char_counter_counts_the_whitespace_between_words() -> None:
    # words total 20 chars but with the gaps the text is 29 chars: one chunk of 20 cannot hold it
    text = "aaaa bbbb cccc dddd eeee"
    chunks = chunk_text(text, chars, max_tokens=20)
    assert_valid_chunks(text, chunks, chars, 20)
    assert len(chunks) == 2


# --------------------------------------------------------------------------- over-long words


def test_single_word_longer_than_max_is_split_into_fitting_pieces() -> None:
    word = "".join(random.Random(0).choice("abcdefghij") for _ in range(1000))
    chunks = chunk_text(word, chars, max_tokens=50)
    assert_valid_chunks(word, chunks, chars, 50)
    assert len(chunks) >= 1000 // 50
    assert "".join(c.text for c in chunks) == word  # pieces are contiguous, no overlap asked


def test_long_word_among_normal_words() -> None:
    text = "start of text " + "z" * 1000 + " and the end"
    chunks = chunk_text(text, chars, max_tokens=50, overlap_tokens=10)
    assert_valid_chunks(text, chunks, chars, 50)
    assert chunks[0].text.startswith("start")
    assert chunks[-1].text.endswith("end")


@pytest.mark.parametrize(("ch", "max_tokens"), [("日", 20), ("😀", 16), ("é", 3), ("x", 1)])
def test_long_word_of_multibyte_chars_with_byte_counter(ch: str, max_tokens: int) -> None:
    text = ch * 300
    chunks = chunk_text(text, utf8_bytes, max_tokens=max_tokens)
    assert_valid_chunks(text, chunks, utf8_bytes, max_tokens)
    assert "".join(c.text for c in chunks) == text


# --------------------------------------------------------------------------- overlap


def test_overlap_makes_consecutive_chunks_share_words() -> None:
    text = " ".join(f"w{i}" for i in range(200))
    chunks = chunk_text(text, words, max_tokens=10, overlap_tokens=3)
    assert_valid_chunks(text, chunks, words, 10)
    assert len(chunks) > 2
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        shared = set(prev.text.split()) & set(nxt.text.split())
        assert 1 <= len(shared) <= 3
        assert nxt.start < prev.end  # they overlap in the text, too
        # the shared words are the tail of one chunk and the head of the next
        assert prev.text.split()[-len(shared) :] == nxt.text.split()[: len(shared)]


def test_no_overlap_means_disjoint_chunks() -> None:
    text = " ".join(f"w{i}" for i in range(200))
    chunks = chunk_text(text, words, max_tokens=10, overlap_tokens=0)
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        assert nxt.start >= prev.end
        assert not set(prev.text.split()) & set(nxt.text.split())


@pytest.mark.parametrize("overlap", [5, 10, 1000])
def test_large_overlap_still_makes_progress(overlap: int) -> None:
    text = " ".join(f"w{i}" for i in range(300))
    chunks = chunk_text(text, words, max_tokens=10, overlap_tokens=overlap)
    assert_valid_chunks(text, chunks, words, 10)
    # overlap is capped at half the window: each chunk adds at least 5 new words
    assert len(chunks) <= (300 - 10) // 5 + 2


def test_overlap_with_char_counter() -> None:
    text = random_text(11, 300)
    chunks = chunk_text(text, chars, max_tokens=60, overlap_tokens=15)
    assert_valid_chunks(text, chunks, chars, 60)
    overlapping = sum(1 for a, b in zip(chunks, chunks[1:], strict=False) if b.start < a.end)
    assert overlapping > 0


# --------------------------------------------------------------------------- property sweep


# a byte counter needs room for one 4-byte character; below that no split can fit
SWEEP = [
    (counter, max_tokens)
    for counter in sorted(COUNTERS)
    for max_tokens in [1, 2, 4, 7, 33, 128]
    if counter != "bytes" or max_tokens >= 4
]


@pytest.mark.parametrize(("counter", "max_tokens"), SWEEP)
@pytest.mark.parametrize("overlap", [0, 3])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_texts_keep_the_contract(
    counter: str, max_tokens: int, overlap: int, seed: int
) -> None:
    count = COUNTERS[counter]
    text = random_text(seed, 120)
    chunks = chunk_text(text, count, max_tokens=max_tokens, overlap_tokens=overlap)
    assert_valid_chunks(text, chunks, count, max_tokens)
