import pytest

from raglab.retriever.data import spread_repeated_passages
from raglab.retriever.train import length_buckets


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


def passages_of(rows):
    return [r["pos"][0] for r in rows]


def test_no_training_file_holds_a_passage_twice():
    """Two questions of one chunk in a batch are each other's false negatives: the files batches are drawn from
    hold each passage once, every row kept, a moved row in the nearest bucket that takes it."""
    rows = [{"query": f"q{i}", "pos": [p], "neg": []} for i, p in enumerate("aabbccdde")]
    buckets, beside = spread_repeated_passages([rows[:4], rows[4:]])
    assert [passages_of(b) for b in buckets] == [["a", "b", "c", "d"], ["a", "b", "c", "d", "e"]]
    assert beside == 0 and sorted(r["query"] for b in buckets for r in b) == sorted(r["query"] for r in rows)
    one, _ = spread_repeated_passages([rows])  # one file: split by how many questions of the passage came before
    assert [passages_of(b) for b in one] == [["a", "b", "c", "d", "e"], ["a", "b", "c", "d"]]
    three = [{"query": "x", "pos": ["p"], "neg": []}] * 3  # more questions of one passage than files: counted
    assert spread_repeated_passages([three[:2], three[2:]])[1] == 1
    distinct = [{"query": "q", "pos": [p], "neg": []} for p in "xyz"]
    assert spread_repeated_passages([distinct]) == ([distinct], 0)  # nothing repeated: one file, as it was


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
    from raglab.core.formats import DataError
    from raglab.retriever.train import check_train_rows

    good = row(3, [2])
    check_train_rows([good], "train.jsonl")
    with pytest.raises(DataError, match=rf"train\.jsonl, row 2, field '{field}'"):
        check_train_rows([good, bad], "train.jsonl")
    with pytest.raises(DataError, match="no training rows"):
        check_train_rows([], "train.jsonl")


def random_bert(path, seed, hidden_size=8):
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=50, hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=16, max_position_embeddings=16)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(path)
    return BertModel.from_pretrained(path).state_dict()


def test_merge_weights_averages_the_runs_and_interpolates_towards_the_base(tmp_path):
    import torch
    from transformers import BertModel

    from raglab.retriever.train import merge_weights

    base = random_bert(tmp_path / "base", 0)
    runs = [random_bert(tmp_path / f"run{i}", i) for i in (1, 2)]
    merge_weights(tmp_path / "soup", [tmp_path / "run1", tmp_path / "run2"], str(tmp_path / "base"), 0.25)
    merged = BertModel.from_pretrained(tmp_path / "soup").state_dict()
    assert (tmp_path / "soup" / "model.safetensors").is_file()
    for key, value in merged.items():
        expected = 0.375 * runs[0][key] + 0.375 * runs[1][key] + 0.25 * base[key] if value.is_floating_point() \
            else runs[0][key]
        assert torch.allclose(value, expected, atol=1e-6), key

    merge_weights(tmp_path / "run1", [tmp_path / "run1"], str(tmp_path / "base"), 0.0)  # one run, no base: unchanged
    assert all(torch.equal(v, runs[0][k]) for k, v in BertModel.from_pretrained(tmp_path / "run1").state_dict().items())

    with pytest.raises(ValueError, match="merge_base_share"):
        merge_weights(tmp_path / "soup", [tmp_path / "run1"], str(tmp_path / "base"), 1.0)
    with pytest.raises(ValueError, match="at least one"):
        merge_weights(tmp_path / "soup", [], str(tmp_path / "base"), 0.2)
    random_bert(tmp_path / "wide", 3, hidden_size=16)
    with pytest.raises(ValueError, match=r"wide: parameter .* differs"):
        merge_weights(tmp_path / "soup", [tmp_path / "run1", tmp_path / "wide"], str(tmp_path / "base"), 0.0)


def test_a_soup_is_the_mean_of_the_runs_it_trains(tmp_path, minilm_dir, typed):
    """soup_size=2 trains seeds s and s+1 and averages them: the same weights as two single runs, averaged."""
    import torch
    from safetensors.torch import load_file

    from raglab.core.formats import write_jsonl
    from raglab.retriever.search import EmbedderConfig
    from raglab.retriever.train import train_embedder

    topics = ["revenue", "debt", "cash", "margin", "tax", "leases", "goodwill", "dividends"]
    write_jsonl(tmp_path / "train.jsonl", [
        {"query": f"What about {t}?", "pos": [f"The company reported {t} for the year."],
         "neg": [f"The company reported {topics[i - 1]} for the year."]} for i, t in enumerate(topics)])
    p = typed({"train_embed": {"epochs": 1, "batch_size": 4, "train_group_size": 2, "query_max_len": 16,
                               "passage_max_len": 16, "mixed_precision": "fp32", "length_buckets": 1,
                               "merge_base_share": 0.0, "logging_steps": 1, "warmup_steps": 0}})
    base = EmbedderConfig.of(p.embedder, model=minilm_dir, revision=None, pooling="mean")
    hp = p.train_embed
    seed = hp.seed

    def train(name, **changes):
        summary = train_embedder(base, hp.model_copy(update=changes), str(tmp_path / "train.jsonl"), tmp_path / name,
                                 tmp_path / f"live-{name}", tmp_path / f"checkpoints-{name}")
        return summary, load_file(tmp_path / name / "model.safetensors")

    summary, soup = train("soup", soup_size=2)
    _, first = train("first", soup_size=1)
    _, second = train("second", soup_size=1, seed=seed + 1)
    assert summary["steps"] == 4  # 2 steps per run
    loss_steps = [line.split("\t")[0] for line in (tmp_path / "live-soup/plots/metrics/loss.tsv").read_text().splitlines()[1:]]
    assert loss_steps == ["1", "2", "3", "4"]  # one curve, the second run after the first
    assert not torch.equal(first["embeddings.word_embeddings.weight"], second["embeddings.word_embeddings.weight"])
    for key, value in soup.items():
        assert torch.allclose(value, (first[key] + second[key]) / 2, atol=1e-6), key
    # the merged folder keeps the base's tokenizer (it once got an empty-vocabulary one: retrieval at chance)
    from transformers import AutoTokenizer

    text = "What was the net income?"
    assert AutoTokenizer.from_pretrained(tmp_path / "soup")(text)["input_ids"] == \
        AutoTokenizer.from_pretrained(minilm_dir)(text)["input_ids"]
    with pytest.raises(ValueError, match="soup_size"):
        train("none", soup_size=0)
