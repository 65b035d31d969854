"""Tests for omnivec.fusion.rrf: reciprocal rank fusion of ranked key lists."""

from __future__ import annotations

import math

import pytest

from omnivec.fusion import DEFAULT_K, rrf


def keys(fused: list[tuple[str, float, dict[str, int]]]) -> list[str]:
    return [key for key, _, _ in fused]


# --------------------------------------------------------------------------- hand-computed example


def test_hand_computed_three_sources() -> None:
    # k = 60, all weights 1.
    #   clip: a b c      clap: b a d      text: c b
    #
    #   a: clip#1 + clap#2          = 1/61 + 1/62        = 0.016393443 + 0.016129032               = 0.032522475
    #   b: clip#2 + clap#1 + text#2 = 1/62 + 1/61 + 1/62 = 0.016129032 + 0.016393443 + 0.016129032 = 0.048651507
    #   c: clip#3 + text#1          = 1/63 + 1/61        = 0.015873016 + 0.016393443               = 0.032266459
    #   d: clap#3                   = 1/63               = 0.015873016
    #
    # Fused order: b (0.04865) > a (0.03252) > c (0.03227) > d (0.01587).
    ranked = {"clip": ["a", "b", "c"], "clap": ["b", "a", "d"], "text": ["c", "b"]}
    fused = rrf(ranked)

    assert keys(fused) == ["b", "a", "c", "d"]
    scores = {key: score for key, score, _ in fused}
    assert scores["b"] == pytest.approx(0.048651507, abs=1e-9)
    assert scores["a"] == pytest.approx(0.032522475, abs=1e-9)
    assert scores["c"] == pytest.approx(0.032266459, abs=1e-9)
    assert scores["d"] == pytest.approx(0.015873016, abs=1e-9)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61 + 1 / 62)
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["d"] == pytest.approx(1 / 63)

    ranks = {key: r for key, _, r in fused}
    assert ranks == {
        "a": {"clip": 1, "clap": 2},
        "b": {"clip": 2, "clap": 1, "text": 2},
        "c": {"clip": 3, "text": 1},
        "d": {"clap": 3},
    }


def test_hand_computed_small_k() -> None:
    # k = 1: a = 1/(1+1) + 1/(1+3) = 0.5 + 0.25 = 0.75 ; b = 1/(1+2) + 1/(1+1) = 0.3333 + 0.5 = 0.8333 ;
    #        c = 1/(1+3) = 0.25 ; e = 1/(1+2) = 0.3333   ->   b, a, e, c
    fused = rrf({"x": ["a", "b", "c"], "y": ["b", "e", "a"]}, k=1)
    assert keys(fused) == ["b", "a", "e", "c"]
    assert [score for _, score, _ in fused] == pytest.approx([5 / 6, 0.75, 1 / 3, 0.25])


def test_default_k_is_60() -> None:
    assert DEFAULT_K == 60
    assert rrf({"s": ["a"]})[0][1] == pytest.approx(1 / 61)
    assert rrf({"s": ["a"]}, k=10)[0][1] == pytest.approx(1 / 11)


def test_single_source_keeps_its_order() -> None:
    fused = rrf({"only": ["z", "y", "x", "w"]})
    assert keys(fused) == ["z", "y", "x", "w"]
    assert [r for _, _, r in fused] == [{"only": 1}, {"only": 2}, {"only": 3}, {"only": 4}]


def test_agreement_beats_a_single_top_rank() -> None:
    # "both" is 2nd in two lists (2/62 = 0.03226); "solo" is 1st in one list only (1/61 = 0.01639).
    fused = rrf({"s1": ["solo", "both"], "s2": ["other", "both"]})
    assert keys(fused)[0] == "both"


# --------------------------------------------------------------------------- weights


def test_weights_scale_each_source() -> None:
    # weights s1 = 3, s2 = 1, k = 60:  a = 3/61 = 0.04918 ; b = 1/61 + 3/62 = 0.06478  -> b, a
    fused = rrf({"s1": ["a", "b"], "s2": ["b"]}, weights={"s1": 3.0, "s2": 1.0})
    assert keys(fused) == ["b", "a"]
    scores = dict((key, score) for key, score, _ in fused)
    assert scores["a"] == pytest.approx(3 / 61)
    assert scores["b"] == pytest.approx(1 / 61 + 3 / 62)


def test_weight_flips_the_order() -> None:
    ranked = {"s1": ["a"], "s2": ["b"]}
    assert keys(rrf(ranked, weights={"s2": 2.0})) == ["b", "a"]
    assert keys(rrf(ranked, weights={"s1": 2.0})) == ["a", "b"]


def test_missing_weight_defaults_to_one_and_extra_weights_are_ignored() -> None:
    fused = rrf({"s1": ["a"], "s2": ["b"]}, weights={"s1": 0.5, "not-a-source": 100.0})
    scores = {key: score for key, score, _ in fused}
    assert scores == pytest.approx({"a": 0.5 / 61, "b": 1 / 61})
    assert keys(fused) == ["b", "a"]


def test_zero_weight_keeps_ranks_but_adds_nothing() -> None:
    fused = rrf({"s1": ["a", "b"], "muted": ["b", "c"]}, weights={"muted": 0.0})
    by_key = {key: (score, r) for key, score, r in fused}
    assert by_key["a"] == (pytest.approx(1 / 61), {"s1": 1})
    assert by_key["b"] == (pytest.approx(1 / 62), {"s1": 2, "muted": 1})
    assert by_key["c"] == (0.0, {"muted": 2})
    assert keys(fused) == ["a", "b", "c"]


@pytest.mark.parametrize("bad", [-0.1, -1, float("nan"), float("inf"), "1", True])
def test_bad_weight_raises(bad: object) -> None:
    with pytest.raises(ValueError, match="weight for source 's1'"):
        rrf({"s1": ["a"]}, weights={"s1": bad})  # type: ignore[dict-item]


# --------------------------------------------------------------------------- k validation


@pytest.mark.parametrize("bad", [0, -1, -60, 1.5, True, "60", None])
def test_bad_k_raises(bad: object) -> None:
    with pytest.raises(ValueError, match="k must be"):
        rrf({"s": ["a"]}, k=bad)  # type: ignore[arg-type]


def test_k_one_is_allowed() -> None:
    assert rrf({"s": ["a"]}, k=1) == [("a", 0.5, {"s": 1})]


# --------------------------------------------------------------------------- duplicates, empties


def test_duplicate_key_counts_only_at_its_best_rank() -> None:
    # s: a b a c  -> a counts once, at rank 1; the later positions keep their ranks (c is 4th, not 3rd).
    fused = rrf({"s": ["a", "b", "a", "c"]})
    by_key = {key: (score, r) for key, score, r in fused}
    assert by_key["a"] == (pytest.approx(1 / 61), {"s": 1})
    assert by_key["b"] == (pytest.approx(1 / 62), {"s": 2})
    assert by_key["c"] == (pytest.approx(1 / 64), {"s": 4})
    assert keys(fused) == ["a", "b", "c"]
    assert len(fused) == 3


def test_duplicate_within_one_source_does_not_affect_others() -> None:
    fused = rrf({"s1": ["x", "x", "x"], "s2": ["y", "x"]})
    by_key = {key: (score, r) for key, score, r in fused}
    assert by_key["x"] == (pytest.approx(1 / 61 + 1 / 62), {"s1": 1, "s2": 2})


def test_no_sources_gives_nothing() -> None:
    assert rrf({}) == []


def test_all_lists_empty_gives_nothing() -> None:
    assert rrf({"s1": [], "s2": []}) == []


def test_empty_list_beside_a_full_one_contributes_nothing() -> None:
    assert rrf({"empty": [], "s": ["a", "b"]}) == [("a", pytest.approx(1 / 61), {"s": 1}),
                                                   ("b", pytest.approx(1 / 62), {"s": 2})]


def test_a_string_instead_of_a_list_is_rejected() -> None:
    with pytest.raises(ValueError, match="list of keys"):
        rrf({"s": "abc"})


# --------------------------------------------------------------------------- ties and determinism


def test_equal_scores_and_equal_best_rank_break_by_key() -> None:
    # p = 1/61 + 1/62 = q exactly; both best rank 1  ->  by key: p, q
    fused = rrf({"x": ["q", "p"], "y": ["p", "q"]})
    assert fused[0][1] == fused[1][1]
    assert keys(fused) == ["p", "q"]
    # the input order of sources or keys changes nothing
    assert keys(rrf({"y": ["p", "q"], "x": ["q", "p"]})) == ["p", "q"]


def test_equal_scores_break_by_best_single_rank_before_key() -> None:
    # k = 1, weights A = 1, B = 2:
    #   zeta:  A#1 -> 1/(1+1)       = 0.5   (best rank 1)
    #   p:     B#1 -> 2/(1+1)       = 1.0
    #   q:     B#2 -> 2/(1+2)       = 0.6667
    #   alpha: B#3 -> 2/(1+3)       = 0.5   (best rank 3)
    # zeta and alpha tie at 0.5; zeta's best rank (1) beats alpha's (3) although "alpha" < "zeta".
    fused = rrf({"A": ["zeta"], "B": ["p", "q", "alpha"]}, k=1, weights={"A": 1.0, "B": 2.0})
    assert keys(fused) == ["p", "q", "zeta", "alpha"]
    assert [score for _, score, _ in fused] == [1.0, pytest.approx(2 / 3), 0.5, 0.5]


def test_singletons_in_different_sources_tie_and_sort_by_key() -> None:
    fused = rrf({"s2": ["n"], "s1": ["m"], "s3": ["l"]})
    assert keys(fused) == ["l", "m", "n"]
    assert len({score for _, score, _ in fused}) == 1


def test_scores_do_not_depend_on_source_order() -> None:
    # a, b and c each have ranks {1, 2, 7}, in different sources. Plain left-to-right float addition gives
    # 1/61+1/62+1/67 = 0.0474478480153437 for a and b but 1/67+1/61+1/62 = 0.04744784801534369 for c,
    # which would break the tie by score. rrf's scores are exactly rounded, so all three are identical and
    # the tie is broken by best rank (all 1) and then by key.
    s1 = ["a", "b", "f1", "f2", "f3", "f4", "c"]
    s2 = ["c", "a", "g1", "g2", "g3", "g4", "b"]
    s3 = ["b", "c", "h1", "h2", "h3", "h4", "a"]
    forward = rrf({"s1": s1, "s2": s2, "s3": s3})
    backward = rrf({"s3": s3, "s2": s2, "s1": s1})
    assert forward == backward
    assert forward[0][1] == forward[1][1] == forward[2][1] == math.fsum([1 / 61, 1 / 62, 1 / 67])
    assert keys(forward)[:3] == ["a", "b", "c"]


def test_long_lists_are_sorted_descending_with_positional_ranks() -> None:
    fused = rrf({"s1": [f"k{i}" for i in range(50)], "s2": [f"k{i}" for i in range(49, -1, -3)]})
    scores = [score for _, score, _ in fused]
    assert scores == sorted(scores, reverse=True)
    assert len(fused) == 50
    assert all(r["s1"] == int(key[1:]) + 1 for key, _, r in fused)
