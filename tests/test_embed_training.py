import pytest

from raglab.embed_training import length_buckets


def whitespace_tokenizer(texts, add_special_tokens=True):
    """Test double with a tokenizer's call interface: one token per word, plus [CLS] and [SEP]."""
    return {"input_ids": [[0] + [1] * len(t.split()) + [2] for t in texts]}


def row(pos_words, neg_words):
    return {"query": "q", "pos": [" ".join(["w"] * pos_words)], "neg": [" ".join(["w"] * n) for n in neg_words]}


def test_length_buckets_sort_by_the_longest_passage_of_a_row_and_keep_every_row():
    rows = [row(30, [2]), row(3, [4]), row(5, [40, 1]), row(1, [1]), row(10, [10]), row(2, [20])]
    buckets = length_buckets(rows, whitespace_tokenizer, 3, max_len=1000)
    assert [len(b) for b in buckets] == [2, 2, 2]
    longest = [[max(len(p.split()) for p in r["pos"] + r["neg"]) for r in b] for b in buckets]
    assert longest == [[1, 4], [10, 20], [30, 40]]
    assert sorted(map(id, sum(buckets, []))) == sorted(map(id, rows))


def test_length_buckets_cap_lengths_and_spread_the_remainder():
    rows = [row(n, [1]) for n in (50, 40, 30, 20, 10, 5, 3)]
    buckets = length_buckets(rows, whitespace_tokenizer, 3, max_len=8)
    assert [len(b) for b in buckets] == [3, 2, 2]
    # rows of 6 words or more reach the cap (8 tokens with [CLS] and [SEP]) and tie: a stable sort
    # keeps them in file order
    assert [[r["pos"][0].count("w") for r in b] for b in buckets] == [[3, 5, 50], [40, 30], [20, 10]]


def test_length_buckets_reject_zero():
    with pytest.raises(ValueError, match="length_buckets"):
        length_buckets([row(1, [1])], whitespace_tokenizer, 0, max_len=8)


@pytest.mark.parametrize("bad, field", [
    ({"query": " ", "pos": ["p"], "neg": []}, "query"),
    ({"query": "q", "pos": [], "neg": ["n"]}, "pos"),
    ({"query": "q", "pos": "p", "neg": ["n"]}, "pos"),
    ({"query": "q", "pos": ["p"]}, "neg"),
])
def test_training_rows_are_checked_before_the_trainer_sees_them(bad, field):
    from raglab.embed_training import check_train_rows
    from raglab.formats import DataError

    good = row(3, [2])
    check_train_rows([good], "train.jsonl")
    with pytest.raises(DataError, match=rf"train\.jsonl, row 2, field '{field}'"):
        check_train_rows([good, bad], "train.jsonl")
    with pytest.raises(DataError, match="no training rows"):
        check_train_rows([], "train.jsonl")


def test_merge_with_base_interpolates_every_weight(tmp_path):
    import torch
    from transformers import BertConfig, BertModel

    from raglab.embed_training import merge_with_base

    config = BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(tmp_path / "base")
    torch.manual_seed(1)
    BertModel(config).save_pretrained(tmp_path / "tuned")
    base = BertModel.from_pretrained(tmp_path / "base").state_dict()
    tuned = BertModel.from_pretrained(tmp_path / "tuned").state_dict()

    merge_with_base(tmp_path / "tuned", str(tmp_path / "base"), 0.25)
    merged = BertModel.from_pretrained(tmp_path / "tuned").state_dict()
    assert (tmp_path / "tuned" / "model.safetensors").is_file()
    for key, value in merged.items():
        expected = 0.75 * tuned[key] + 0.25 * base[key] if value.is_floating_point() else tuned[key]
        assert torch.allclose(value, expected, atol=1e-6), key
    with pytest.raises(ValueError, match="merge_base_share"):
        merge_with_base(tmp_path / "tuned", str(tmp_path / "base"), 1.0)
