"""``fastrnn.text``: tokenizers, vocabularies, streams and windows, and a small language model
trained statefully on them (perplexity, generation)."""

import math

import numpy as np
import pytest

import fastrnn
from fastrnn import layers, text
from fastrnn.models import Sequential


def test_words_split_as_keras_tokenizer_does():
    assert text.words("A <br />great, GREAT film!<br/>Truly.") == ["a", "great", "great", "film",
                                                                   "truly"]
    assert text.characters("ab c") == ["a", "b", " ", "c"]


def test_word_vocabulary_keeps_the_most_frequent_words_and_marks_the_rest_unknown():
    corpus = ["the cat sat", "the cat ran", "the dog"]
    vocab = text.Vocabulary.build(corpus, num_words=4)
    assert vocab.itos == ["<unk>", "<eos>", "the", "cat"]
    ids = vocab.encode(corpus)
    assert vocab.decode(ids) == ("the cat <unk> <eos> the cat <unk> <eos> the <unk> <eos>")
    assert ids.dtype == np.int64


def test_character_vocabulary_refuses_an_unknown_character():
    vocab = text.Vocabulary.build(["abc"], level="char")
    assert vocab.decode(vocab.encode("cab", eos=False)) == "cab"
    with pytest.raises(ValueError, match="character 'z' is not in the vocabulary"):
        vocab.encode("abz")


def test_batchify_and_windows_keep_each_stream_in_order():
    ids = np.arange(23)
    streams = text.batchify(ids, 3)                        # 3 streams of 7, the rest dropped
    np.testing.assert_array_equal(streams, np.arange(21).reshape(3, 7))
    x, y = text.windows(streams, 2)                        # (7 - 1) // 2 = 3 windows
    assert x.shape == y.shape == (9, 2)
    np.testing.assert_array_equal(y, x + 1)                # targets: the next token
    for j in range(3):                                     # batch j = window j of each stream
        np.testing.assert_array_equal(x[j * 3:(j + 1) * 3], streams[:, 2 * j:2 * j + 2])


@pytest.mark.parametrize("call, match", [
    (lambda: text.Vocabulary.build([""]), "the corpus is empty"),
    (lambda: text.Vocabulary.build(["a b"], num_words=2), "num_words must be an integer >= 3"),
    (lambda: text.batchify(np.arange(5), 3), "need at least 2 ids per stream"),
    (lambda: text.batchify(np.zeros(5), 2), "1-D array of token ids"),
    (lambda: text.windows(np.zeros((2, 4), int), 4), "shorter than one window of 4 steps"),
    (lambda: text.words(3), "text must be a str"),
])
def test_bad_input_names_what_is_wrong(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def language_model(V, B, backend="numba"):
    model = Sequential([layers.Input((None,), batch_size=B), layers.Embedding(V, 16),
                        layers.SimpleRNN(32, return_sequences=True, stateful=True),
                        layers.Dense(V)], seed=0, backend=backend)
    model.compile(fastrnn.optimizers.Adam(learning_rate=0.01),
                  fastrnn.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_a_stateful_language_model_learns_a_pattern_and_generates_it():
    corpus = ["abcdefgh" * 40]
    vocab = text.Vocabulary.build(corpus, level="char")
    streams = text.batchify(vocab.encode(corpus, eos=False), 4)
    x, y = text.windows(streams, 10)
    model = language_model(len(vocab), 4)
    before = text.perplexity(model, x, y, batch_size=4)
    model.fit(x, y, batch_size=4, epochs=8, shuffle=False, verbose=0)
    after = text.perplexity(model, x, y, batch_size=4)
    assert before > 6 and after < 1.3                      # 9 symbols; the pattern is certain
    assert text.generate(model, vocab, "abc", 10, temperature=0) == "abcdefghabcde"
    a = text.generate(model, vocab, "ab", 20, temperature=1.0, seed=5)
    assert a == text.generate(model, vocab, "ab", 20, temperature=1.0, seed=5)
    assert len(a) == 22


def test_generate_refuses_bad_arguments():
    vocab = text.Vocabulary.build(["the cat sat"])
    model = language_model(len(vocab), 2)
    model.build((None, None))
    with pytest.raises(ValueError, match="not in the vocabulary"):
        text.generate(model, vocab, "zebra", 3)
    with pytest.raises(ValueError, match="temperature must be a number >= 0"):
        text.generate(model, vocab, "the", 3, temperature=-1)
    with pytest.raises(ValueError, match="top_k must be an integer"):
        text.generate(model, vocab, "the", 3, top_k=0)
    with pytest.raises(ValueError, match="prompt has no token"):
        text.generate(model, vocab, "!!", 3)


def test_perplexity_is_exp_of_the_mean_loss():
    vocab = text.Vocabulary.build(["a b c d e f"] * 10)
    x, y = text.windows(text.batchify(vocab.encode(["a b c d e f"] * 10), 2), 5)
    model = language_model(len(vocab), 2, backend="numpy")
    loss = model.evaluate(x, y, batch_size=2, verbose=0)
    model.reset_states()
    assert math.isclose(text.perplexity(model, x, y, batch_size=2), math.exp(loss), rel_tol=1e-6)


def test_lm_command_trains_saves_and_generates(tmp_path, capsys):
    from fastrnn import cli
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["to be or not to be that is the question"] * 60),
                      encoding="utf-8")
    out = tmp_path / "lm.npz"
    assert cli.main(["lm", "train", "--corpus", str(corpus), "--level", "word", "--epochs", "2",
                     "--batch-size", "4", "--bptt", "5", "--hidden-dim", "16", "--embed-dim", "8",
                     "-q", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "epoch 2/2: loss" in printed and "validation perplexity" in printed
    model = fastrnn.load_model(out)
    assert model.extra["level"] == "word" and "question" in model.extra["vocab"]
    assert cli.main(["lm", "generate", str(out), "--prompt", "to be", "--length", "5",
                     "--temperature", "0"]) == 0
    words = capsys.readouterr().out.split()
    assert words[:2] == ["to", "be"] and len(words) == 7
    assert cli.main(["lm", "generate", str(out), "--prompt", "zebra"]) == 2
    assert "not in the vocabulary" in capsys.readouterr().err


def test_lm_command_refuses_a_corpus_that_is_not_utf8(tmp_path, capsys):
    from fastrnn import cli
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\x00 not text")
    assert cli.main(["lm", "train", "--corpus", str(bad), "--output", str(tmp_path / "m")]) == 2
    assert "is not UTF-8 text" in capsys.readouterr().err
