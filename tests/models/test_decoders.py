import itertools

import pytest
import torch

from medmodal.models import available, create

from .helpers import BOS, EOS, PAD, VOCAB, assert_all_params_get_grad

NAMES = available("decoder")
CONTEXT_DIM, MEMORY_DIM, N = 12, 10, 6
# every decoder of these tests: its widths and special token ids
WIDTHS = {"embed_dim": 16, "context_dim": CONTEXT_DIM, "memory_dim": MEMORY_DIM}
TOKENS = {"pad_id": PAD, "bos_id": BOS, "eos_id": EOS}


def build(name: str, vocab_size: int = VOCAB, dropout: float = 0.0, **kwargs):
    if name == "transformer":
        kwargs.setdefault("num_heads", 2)
    return create("decoder", name, vocab_size=vocab_size, dropout=dropout, **WIDTHS, **TOKENS, **kwargs)


def inputs(batch_size=3, target_len=7, seed=0, vocab_size=VOCAB):
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(3, vocab_size, (batch_size, target_len), generator=g)
    targets[:, 0] = BOS
    context = torch.randn(batch_size, CONTEXT_DIM, generator=g)
    memory = torch.randn(batch_size, N, MEMORY_DIM, generator=g)
    return targets, context, memory


@pytest.mark.parametrize("name", NAMES)
def test_teacher_forcing_shapes_and_gradients(name):
    decoder = build(name, dropout=0.1).train()
    targets, context, memory = inputs()
    context.requires_grad_(True)
    memory.requires_grad_(True)
    logits = decoder(targets, context, memory)
    assert logits.shape == (3, 6, VOCAB)
    assert torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets[:, 1:].reshape(-1)).backward()
    assert_all_params_get_grad(decoder)
    assert context.grad.abs().sum() > 0 and memory.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_teacher_forcing_is_causal(name):
    decoder = build(name).eval()
    targets, context, memory = inputs()
    changed = targets.clone()
    changed[:, 4:] = (changed[:, 4:] + 1 - 3) % (VOCAB - 3) + 3
    a, b = decoder(targets, context, memory), decoder(changed, context, memory)
    assert torch.allclose(a[:, :4], b[:, :4], atol=1e-5)  # positions that only saw targets[:, :4]
    assert not torch.allclose(a[:, 4:], b[:, 4:])


@pytest.mark.parametrize("name", NAMES)
def test_step_agrees_with_teacher_forcing(name):
    """The search drives ``step``; training uses ``forward``: both must give the same distribution."""
    decoder = build(name).eval()
    targets, context, memory = inputs()
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 0, 1, 0, 1, 0]], dtype=torch.bool)
    expected = torch.log_softmax(decoder(targets, context, memory, mask), dim=-1)
    state = decoder.init_state(context, memory, mask)
    for t in range(targets.shape[1] - 1):
        log_probs, state, _ = decoder.step(state, targets[:, t])
        assert torch.allclose(log_probs, expected[:, t], atol=1e-4), t


@pytest.mark.parametrize("name", NAMES)
def test_masked_memory_is_ignored(name):
    decoder = build(name).eval()
    targets, context, memory = inputs()
    mask = torch.ones(3, N, dtype=torch.bool)
    mask[:, 3:] = False
    noisy = memory.clone()
    noisy[:, 3:] = torch.randn(3, N - 3, MEMORY_DIM) * 10
    assert torch.allclose(
        decoder(targets, context, memory, mask), decoder(targets, context, noisy, mask), atol=1e-5
    )
    assert not torch.allclose(decoder(targets, context, memory), decoder(targets, context, noisy))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("beam_size", [1, 3])
def test_generation_output_format(name, beam_size):
    decoder = build(name).eval()
    _, context, memory = inputs(batch_size=4)
    out = decoder.generate(context, memory, max_len=9, beam_size=beam_size)
    ids = out.ids
    assert ids.dim() == 2 and ids.shape[0] == 4 and 1 <= ids.shape[1] <= 9
    assert out.scores.shape == (4,) and torch.isfinite(out.scores).all() and (out.scores <= 0).all()
    for row in ids.tolist():
        end = row.index(EOS) + 1 if EOS in row else len(row)
        assert BOS not in row and PAD not in row[:end]
        assert all(token == PAD for token in row[end:])
    if name == "lstm":
        generated = (ids != PAD).float()
        assert out.attention.shape == (4, ids.shape[1], N)
        assert torch.allclose(out.attention.sum(-1), generated, atol=1e-5)  # sums to 1, zero after EOS
    else:
        assert out.attention is None


@pytest.mark.parametrize("name", NAMES)
def test_greedy_equals_beam_search_with_one_beam(name):
    from medmodal.models.decoders.search import beam_search

    decoder = build(name).eval()
    _, context, memory = inputs(batch_size=5)
    greedy = decoder.generate(context, memory, max_len=8, beam_size=1)
    state = decoder.init_state(context, memory, None)
    with torch.no_grad():
        beam = beam_search(decoder, state, batch_size=5, max_len=8, beam_size=1)
    assert torch.equal(greedy.ids, beam.ids)
    assert torch.allclose(greedy.scores, beam.scores)


def sequence_score(decoder, context, memory, tokens: list[int]) -> float:
    """Length-normalised log-probability of ``tokens`` (no BOS) under teacher forcing."""
    ids = torch.tensor([[BOS] + tokens])
    with torch.no_grad():
        log_probs = torch.log_softmax(decoder(ids, context, memory), dim=-1)[0]
    return float(log_probs[torch.arange(len(tokens)), torch.tensor(tokens)].sum()) / len(tokens)


@pytest.mark.parametrize("name", NAMES)
def test_beam_search_with_a_wide_beam_is_exhaustive_search(name):
    """Tiny vocabulary, short max_len, beam wider than the number of hypotheses: beam search
    must return the best sequence of all, as found by enumerating them."""
    vocab_size, max_len = 6, 3  # PAD, BOS, EOS + 3 words
    decoder = build(name, vocab_size=vocab_size).eval()
    words = [3, 4, 5]
    for seed in range(3):
        _, context, memory = inputs(batch_size=1, seed=seed, vocab_size=vocab_size)
        candidates = [list(p) + [EOS] for n in range(max_len) for p in itertools.product(words, repeat=n)]
        candidates += [list(p) for p in itertools.product(words, repeat=max_len)]  # cut at max_len
        scored = {tuple(c): sequence_score(decoder, context, memory, c) for c in candidates}
        best = max(scored, key=scored.get)
        out = decoder.generate(context, memory, max_len=max_len, beam_size=64)
        assert tuple(t for t in out.ids[0].tolist() if t != PAD) == best
        assert abs(float(out.scores[0]) - scored[best]) < 1e-4


def reference_beam_search(decoder, context, memory, beam_size, max_len):
    """Beam search for one sample written plainly (lists, teacher-forced scoring): the
    same algorithm as the batched one, to check its bookkeeping."""
    beams = [([], 0.0, False)]  # (tokens, sum of log-probs, finished)
    for _ in range(max_len):
        candidates = []
        for tokens, score, finished in beams:
            if finished:
                candidates.append((tokens, score, True))
                continue
            with torch.no_grad():
                ids = torch.tensor([[BOS] + tokens + [PAD]])
                log_probs = torch.log_softmax(decoder(ids, context, memory), dim=-1)[0, -1]
            for token in range(log_probs.shape[0]):
                if token not in (PAD, BOS):
                    candidates.append((tokens + [token], score + float(log_probs[token]), token == EOS))
        beams = sorted(candidates, key=lambda h: h[1] / len(h[0]), reverse=True)[:beam_size]
        if all(finished for _, _, finished in beams):
            break
    tokens, score, _ = max(beams, key=lambda h: h[1] / len(h[0]))
    return tokens, score / len(tokens)


@pytest.mark.parametrize("name", NAMES)
def test_beam_search_matches_a_plain_reference_implementation(name):
    decoder = build(name).eval()
    with torch.no_grad():
        decoder.output.bias[EOS] += 0.5  # make EOS likely enough that hypotheses end at different lengths
    _, context, memory = inputs(batch_size=6, seed=1)
    beam = decoder.generate(context, memory, max_len=6, beam_size=4)
    lengths = set()
    for i in range(6):
        tokens, score = reference_beam_search(decoder, context[i : i + 1], memory[i : i + 1], 4, 6)
        assert [t for t in beam.ids[i].tolist() if t != PAD] == tokens
        assert abs(float(beam.scores[i]) - score) < 1e-4
        # The reported score is that of the returned sequence under teacher forcing.
        assert abs(sequence_score(decoder, context[i : i + 1], memory[i : i + 1], tokens) - score) < 1e-4
        lengths.add(len(tokens))
    assert len(lengths) > 1


@pytest.mark.parametrize("name", NAMES)
def test_batched_beam_search_equals_one_sample_at_a_time(name):
    decoder = build(name).eval()
    _, context, memory = inputs(batch_size=3, seed=2)
    together = decoder.generate(context, memory, max_len=7, beam_size=3)
    for i in range(3):
        alone = decoder.generate(context[i : i + 1], memory[i : i + 1], max_len=7, beam_size=3)
        length = alone.ids.shape[1]
        assert torch.equal(together.ids[i, :length], alone.ids[0])
        assert (together.ids[i, length:] == PAD).all()
        assert torch.allclose(together.scores[i], alone.scores[0], atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_decoder_learns_to_reproduce_a_caption(name):
    torch.manual_seed(0)
    decoder = build(name).train()
    caption = [BOS, 7, 12, 7, 30, 41, 9, EOS]
    targets = torch.tensor([caption, caption])
    _, context, memory = inputs(batch_size=2)
    optimiser = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    for _ in range(60):
        optimiser.zero_grad()
        logits = decoder(targets, context, memory)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), targets[:, 1:].reshape(-1))
        loss.backward()
        optimiser.step()
    decoder.eval()
    assert loss.item() < 0.2
    for beam_size in (1, 3):
        out = decoder.generate(context, memory, max_len=12, beam_size=beam_size)
        assert out.ids.tolist() == [caption[1:], caption[1:]]


def test_generate_rejects_bad_arguments():
    decoder = build("lstm")
    _, context, memory = inputs()
    with pytest.raises(ValueError, match="max_len and beam_size"):
        decoder.generate(context, memory, max_len=0)
