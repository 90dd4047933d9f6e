"""Only known models and their declared inputs are recorded, every string bounded."""

from __future__ import annotations

from controlplane.store.database import Database
from controlplane.tensors import TensorShape
from controlplane.traffic.admission import MAX_DIMS, MAX_VERSION, DeclaredInputs, admit
from controlplane.traffic.observation import OK, Observation
from controlplane.traffic.recorder import TrafficRecorder
from controlplane.traffic.store import TrafficStore

X = TensorShape("x", "FP32", (1, 4))
PAYLOAD = (b"\0" * 16, ((0, 16),))


def obs(model: str = "m", inputs: tuple[TensorShape, ...] = (X,), outcome: str = OK,
        version: str = "", payload: tuple[bytes, tuple[tuple[int, int], ...]] | None = None
        ) -> Observation:
    return Observation(model, version, inputs, 1e9, 0.001, outcome, False, None, payload)


def test_a_request_of_declared_inputs_is_kept_as_it_is() -> None:
    o = obs(payload=PAYLOAD)
    assert admit(o, frozenset({"x"})) is o


def test_undeclared_and_malformed_inputs_are_left_out_with_the_payload() -> None:
    huge = TensorShape("y" * 1_000_000, "FP32", (1,))
    odd = TensorShape("x", "NOT_A_TYPE" * 1000, (1,))
    deep = TensorShape("x", "FP32", (1,) * (MAX_DIMS + 1))
    kept = admit(obs(inputs=(X, huge, odd, deep), outcome="INVALID_ARGUMENT",
                     version="9" * 10_000, payload=PAYLOAD), frozenset({"x"}))
    assert kept.inputs == (X,)
    assert kept.payload is None  # it no longer matches its inputs
    assert kept.version == "9" * MAX_VERSION


def test_repeating_a_declared_name_does_not_multiply_it() -> None:
    kept = admit(obs(inputs=(X,) * 100_000, outcome="INVALID_ARGUMENT"), frozenset({"x"}))
    assert kept.inputs == (X,)


def test_a_model_declaring_no_inputs_keeps_what_triton_accepted_within_bounds() -> None:
    # auto_complete_config: Triton checked the names against the completed config
    completed = TensorShape("tokens", "INT64", (1, 8))
    assert admit(obs(inputs=(completed,)), frozenset()).inputs == (completed,)
    assert admit(obs(inputs=(completed,), outcome="INVALID_ARGUMENT"),
                 frozenset()).inputs == ()
    assert admit(obs(inputs=(TensorShape("n" * 300, "INT64", (1,)),)), frozenset()).inputs == ()


def test_declared_inputs_cache_only_known_models() -> None:
    lookups: list[str] = []

    def inputs(model: str) -> list[str]:
        lookups.append(model)
        return ["x"]

    declared = DeclaredInputs(lambda: frozenset({"m"}), inputs)
    assert declared("m") == frozenset({"x"})
    assert declared("m") == frozenset({"x"})
    assert lookups == ["m"]  # cached
    for i in range(1000):
        assert declared(f"nope{i}") is None
    assert list(declared._cache) == ["m"]


async def test_unknown_models_are_counted_not_stored(database: Database) -> None:
    store = TrafficStore(database, "default")
    recorder = TrafficRecorder(store, declared=DeclaredInputs(lambda: frozenset({"m"}),
                                                              lambda _: ["x"]))
    for i in range(50):
        recorder.record(obs(model=f"unknown-{i}-" + "z" * 10_000, outcome="NOT_FOUND"))
    recorder.record(obs(inputs=(X, TensorShape("junk" * 1000, "FP32", (1,))),
                        outcome="INVALID_ARGUMENT"))
    assert recorder.unknown_models == 50
    assert await recorder.flush() == 1
    [row] = store.requests("m")
    assert (row.signature, row.outcome) == ("x:FP32:1x4", "INVALID_ARGUMENT")
    assert sum(len(store.requests(f"unknown-{i}-" + "z" * 10_000)) for i in range(3)) == 0
