"""engine-sim's answers end where vLLM's would: EOS after the prompt's natural length (unless ignore_eos, never
before min_tokens), the first stop string (cut from the text unless include_stop_str_in_output), else
max_tokens. Pure: `llmfleet.sim.engine.answer`; the socket-level checks are in test_vllm_conformance."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from llmfleet.sim.engine import WORDS, Sampling, answer, output_tokens, sampling_of

prompts = st.text(min_size=1, max_size=40)
stops = st.lists(
    st.sampled_from(WORDS) | st.sampled_from([" ", "e", "ca", "s t", "zz"]) | st.text(min_size=1, max_size=4),
    max_size=3,
)


@st.composite
def samplings(draw: st.DrawFn) -> Sampling:
    max_tokens = draw(st.integers(1, 80))
    return Sampling(
        max_tokens=max_tokens,
        stop=tuple(draw(stops)),
        ignore_eos=draw(st.booleans()),
        min_tokens=draw(st.integers(0, max_tokens)),
        include_stop_str_in_output=draw(st.booleans()),
    )


ranges = st.none() | st.tuples(st.integers(1, 40), st.integers(0, 40)).map(lambda t: (t[0], t[0] + t[1]))


@settings(max_examples=500, deadline=None)
@given(prompt=prompts, s=samplings(), rng=ranges)
def test_an_answer_ends_where_vllm_would_end_it(
    prompt: str, s: Sampling, rng: tuple[int, int] | None
) -> None:
    a = answer(prompt, s, rng)
    full = "".join(output_tokens(prompt, s.max_tokens))
    text = "".join(a.tokens)
    assert 1 <= len(a.tokens) <= s.max_tokens
    assert full.startswith(text)  # the same words, cut
    assert a == answer(prompt, s, rng)  # deterministic: caches can be tested
    if a.finish == "length":
        assert len(a.tokens) == s.max_tokens and text == full and a.stop_reason is None
        assert not any(x in full[len("".join(output_tokens(prompt, s.min_tokens))) :] for x in s.stop if x)
    else:
        assert a.finish == "stop" and len(a.tokens) > s.min_tokens
    if a.stop_reason is not None:
        assert a.stop_reason in s.stop
        if s.include_stop_str_in_output:
            assert text.endswith(a.stop_reason)
        else:
            assert full[len(text) :].startswith(a.stop_reason)
    elif a.finish == "stop":  # EOS: one more token, no text; never when the request said ignore_eos
        assert rng is not None and not s.ignore_eos and a.tokens[-1] == ""
        assert rng[0] <= len(a.tokens) <= rng[1] or len(a.tokens) == s.min_tokens + 1


def test_without_ignore_eos_answers_have_their_own_lengths() -> None:
    lengths = {len(answer(f"question {i}", Sampling(max_tokens=4096), (32, 1024)).tokens) for i in range(50)}
    assert len(lengths) > 40 and all(32 <= n <= 1024 for n in lengths)
    assert {len(answer(f"q {i}", Sampling(4096, ignore_eos=True), (32, 1024)).tokens) for i in range(5)} == {
        4096
    }


@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "stop": st.none()
            | st.text()
            | st.lists(st.text())
            | st.integers()
            | st.lists(st.integers(), min_size=1),
            "ignore_eos": st.booleans() | st.integers(2, 5),
            "min_tokens": st.integers(-3, 200) | st.booleans(),
            "include_stop_str_in_output": st.booleans() | st.text(min_size=1),
        },
    )
)
def test_bad_sampling_fields_are_400s_naming_the_field(body: dict) -> None:
    got = sampling_of(body, 100)
    if isinstance(got, tuple):
        field, message = got
        assert field in body and field in message
    else:
        assert got.max_tokens == 100 and 0 <= got.min_tokens <= 100 and all(got.stop)
