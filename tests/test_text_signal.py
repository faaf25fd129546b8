"""benchmarks/research/text_signal.py's measures: the target's rank by text similarity, TF-IDF, whitening, by hand."""

import numpy as np
import pytest
from conftest import benchmark_script


@pytest.fixture(scope="module")
def signal():
    return benchmark_script("research/text_signal")


def test_rank_excludes_padding_and_the_last_item_and_counts_ties_half(signal):
    # items 0 (padding) .. 4; the history's last item is 1
    sims = np.array([[9.0, 8.0, 0.5, 0.7, 0.5]])
    rank = signal.ranks(lambda p: sims[[0] * len(p)], np.array([1]), np.array([2]))
    # above item 2: item 3 (0.7); tied with it: item 4; padding (9) and item 1 (8) excluded -> 1 + 1 + 0.5
    assert rank.tolist() == [2.5]
    assert signal.metrics(np.array([1.0, 3.0, 11.0]))["hit@10"] == pytest.approx(2 / 3)
    assert signal.metrics(np.array([1.0, 3.0, 11.0]))["ndcg@10"] == pytest.approx((1 + 1 / np.log2(4)) / 3)


def test_tfidf_rows_are_unit_and_a_shared_rare_word_weighs_more(signal):
    # item 0 is padding; items 1 and 2 share the rare word 3, items 1 and 3 the common word 1 (in 3 of 3 titles)
    titles = np.array([[0, 0], [1, 3], [1, 3], [1, 2]])
    x = signal.tfidf(titles, 4)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
    assert norms[1:] == pytest.approx(np.ones(3))
    sim = (x @ x.T).toarray()
    assert sim[1, 2] == pytest.approx(1.0)  # the same words
    assert 0 < sim[1, 3] < 0.5  # only the common word


def test_whitening_gives_identity_covariance_and_keeps_rows_without_text_zero(signal):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 3)) @ np.array([[5.0, 0, 0], [1, 1, 0], [0, 0, 0.1]])
    features -= features.mean(0)
    features[0] = 0.0  # padding
    white = signal.whiten(features, eps=1e-9)
    assert np.abs(white[0]).sum() == 0
    assert np.linalg.norm(white[1:], axis=1) == pytest.approx(np.ones(399))
    # whitened, every direction is equally spread: unit vectors then have covariance I / 3 (the raw rows would
    # point almost all along the first axis)
    assert np.cov(features[1:] / np.linalg.norm(features[1:], axis=1, keepdims=True), rowvar=False)[0, 0] > 0.5
    assert np.abs(np.cov(white[1:], rowvar=False) - np.eye(3) / 3).max() < 0.05
