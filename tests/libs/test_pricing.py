"""Price tables: exact costs, price changes that never rewrite history, imports."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from llmops.pricing import (
    Price,
    PriceError,
    PriceTable,
    TokenUsage,
    cost_nanos,
    from_litellm,
    load_price_file,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PRICES = ROOT / "deploy" / "metering" / "prices.yaml"
LITELLM_SAMPLE = ROOT / "tests" / "data" / "litellm_prices_sample.json"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


MINI = Price(
    model="openai/gpt-4o-mini",
    effective_from=at("2024-07-18T00:00:00Z"),
    input_per_mtok=Decimal("0.15"),
    output_per_mtok=Decimal("0.60"),
    cached_input_per_mtok=Decimal("0.075"),
)
O3_LAUNCH = Price(
    model="openai/o3",
    effective_from=at("2025-04-16T00:00:00Z"),
    input_per_mtok=Decimal("10"),
    output_per_mtok=Decimal("40"),
    cached_input_per_mtok=Decimal("2.50"),
)
O3_CUT = Price(
    model="openai/o3",
    effective_from=at("2025-06-10T00:00:00Z"),
    input_per_mtok=Decimal("2"),
    output_per_mtok=Decimal("8"),
    cached_input_per_mtok=Decimal("0.50"),
)
CAUSAL_LM = Price(
    model="triton/causal_lm",
    effective_from=at("2025-01-01T00:00:00Z"),
    gpu_second=Decimal("0.0008"),
    source="set by ops: self-hosted",
)


# --- cost -------------------------------------------------------------------


def test_cost_with_cached_tokens_is_exact_to_the_nano() -> None:
    usage = TokenUsage(input_tokens=1234, output_tokens=567, cached_input_tokens=1000)
    # 234 x 0.15 + 1000 x 0.075 + 567 x 0.60 = 450.3 per million tokens = $0.0004503
    assert cost_nanos(MINI, usage) == 450_300


def test_reasoning_tokens_default_to_the_output_price() -> None:
    usage = TokenUsage(10_000, 5_000, cached_input_tokens=2_000, reasoning_tokens=4_000)
    # 8000 x 2 + 2000 x 0.50 + 1000 x 8 + 4000 x 8 = 57,000 per million = $0.057
    assert cost_nanos(O3_CUT, usage) == 57_000_000


def test_cached_and_reasoning_prices_of_their_own() -> None:
    price = Price(
        model="acme/thinker",
        effective_from=at("2025-01-01T00:00:00Z"),
        input_per_mtok=Decimal("1"),
        output_per_mtok=Decimal("2"),
        cached_input_per_mtok=Decimal("0.25"),
        reasoning_per_mtok=Decimal("3"),
    )
    usage = TokenUsage(100, 50, cached_input_tokens=40, reasoning_tokens=20)
    # 60 x 1 + 40 x 0.25 + 30 x 2 + 20 x 3 = 190 per million tokens
    assert cost_nanos(price, usage) == 190_000


def test_cached_price_defaults_to_the_input_price() -> None:
    price = MINI.model_copy(update={"cached_input_per_mtok": None})
    usage = TokenUsage(1000, 0, cached_input_tokens=600)
    assert cost_nanos(price, usage) == cost_nanos(price, TokenUsage(1000, 0)) == 150_000


def test_gpu_seconds_add_to_token_prices() -> None:
    assert cost_nanos(CAUSAL_LM, TokenUsage(500, 200, gpu_seconds=1.25)) == 1_000_000
    assert cost_nanos(CAUSAL_LM, TokenUsage(0, 0, gpu_seconds=0.1)) == 80_000  # not 0.1000...01
    both = CAUSAL_LM.model_copy(update={"input_per_mtok": Decimal("1")})
    assert cost_nanos(both, TokenUsage(1_000, 0, gpu_seconds=0.5)) == 1_000_000 + 400_000
    assert cost_nanos(MINI, TokenUsage(10, 0, gpu_seconds=3.0)) == 1_500  # no GPU price


def test_cost_matches_the_table_to_the_micro_dollar_at_scale() -> None:
    usage = TokenUsage(987_654_321, 123_456_789, cached_input_tokens=555_555_555)
    expected = (
        (987_654_321 - 555_555_555) * Decimal("0.15")
        + 555_555_555 * Decimal("0.075")
        + 123_456_789 * Decimal("0.60")
    ) / 1_000_000
    assert Decimal(cost_nanos(MINI, usage)) / 10**9 == expected.quantize(Decimal("1e-9"))
    assert expected == Decimal("180.555554925")  # to the micro-dollar and below


def test_rounded_half_up_once_at_the_end() -> None:
    tiny = Price(
        model="acme/tiny",
        effective_from=at("2025-01-01T00:00:00Z"),
        input_per_mtok=Decimal("0.0004"),
        output_per_mtok=Decimal("0.0004"),
    )
    assert cost_nanos(tiny, TokenUsage(1, 0)) == 0  # 0.4 nano
    assert cost_nanos(tiny, TokenUsage(1, 1)) == 1  # 0.8 nano: one rounding, not two
    half = tiny.model_copy(update={"input_per_mtok": Decimal("0.0005")})
    assert cost_nanos(half, TokenUsage(1, 0)) == 1  # 0.5 nano rounds up


def test_parts_larger_than_totals_are_capped() -> None:
    assert cost_nanos(MINI, TokenUsage(100, 0, cached_input_tokens=500)) == 7_500
    assert cost_nanos(O3_CUT, TokenUsage(0, 10, reasoning_tokens=99)) == 80_000
    assert cost_nanos(MINI, TokenUsage(-5, -5, cached_input_tokens=-1, gpu_seconds=-1)) == 0


# --- prices over time -------------------------------------------------------


def test_a_price_change_applies_from_its_effective_time() -> None:
    table = PriceTable([O3_CUT, MINI, O3_LAUNCH])
    assert table.price_for("openai/o3", at("2025-04-15T23:59:59Z")) is None
    assert table.price_for("openai/o3", at("2025-04-16T00:00:00Z")) == O3_LAUNCH
    assert table.price_for("openai/o3", at("2025-06-09T23:59:59.999Z")) == O3_LAUNCH
    assert table.price_for("openai/o3", at("2025-06-10T00:00:00Z")) == O3_CUT
    assert table.price_for("openai/o3", at("2025-06-10T01:59:59+02:00")) == O3_LAUNCH
    assert table.price_for("openai/o3", NOW) == O3_CUT
    usage = TokenUsage(1_000_000, 1_000_000)
    assert cost_nanos(O3_LAUNCH, usage) == 50 * 10**9
    assert cost_nanos(O3_CUT, usage) == 10 * 10**9


def test_an_unpriced_model_has_no_price_not_zero() -> None:
    table = PriceTable([MINI])
    assert table.price_for("openai/gpt-5-unknown", NOW) is None
    assert table.price_for("triton/causal_lm", NOW) is None
    with pytest.raises(PriceError):
        table.price_for("openai/gpt-4o-mini", datetime(2026, 1, 1))  # naive: ambiguous


def test_table_basics() -> None:
    table = PriceTable([O3_CUT, MINI, O3_LAUNCH])
    assert len(table) == 3
    assert table.models() == ["openai/gpt-4o-mini", "openai/o3"]
    assert table.entries() == [MINI, O3_LAUNCH, O3_CUT]
    assert O3_CUT.version == "openai/o3@2025-06-10T00:00:00Z"
    with pytest.raises(PriceError, match="two entries"):
        PriceTable([O3_CUT, O3_CUT])


def test_effective_from_is_utc_to_the_second() -> None:
    price = MINI.model_copy()
    late = Price.model_validate(
        {**price.model_dump(), "effective_from": "2026-01-01T01:00:00.250+01:00"}
    )
    assert late.effective_from == at("2026-01-01T00:00:01Z")  # rounded up, never earlier
    assert late.version == "openai/gpt-4o-mini@2026-01-01T00:00:01Z"
    with pytest.raises(ValueError, match="time zone"):
        Price(model="openai/x", effective_from=datetime(2026, 1, 1))
    with pytest.raises(ValueError):
        Price(model="no-provider", effective_from=NOW)
    with pytest.raises(ValueError):
        Price(model="openai/x", effective_from=NOW, input_per_mtok=Decimal("-1"))


def test_history_is_never_rewritten() -> None:
    table = PriceTable([O3_LAUNCH, O3_CUT])
    changed = O3_CUT.model_copy(update={"output_per_mtok": Decimal("7")})
    with pytest.raises(PriceError, match="would rewrite history"):
        table.with_prices([changed], now=NOW)
    backdated = O3_CUT.model_copy(update={"effective_from": at("2025-05-01T00:00:00Z")})
    with pytest.raises(PriceError, match="would rewrite history"):
        table.with_prices([backdated], now=NOW)
    assert table.entries() == [O3_LAUNCH, O3_CUT]  # tables are values: untouched


def test_future_changes_are_added_and_may_be_corrected_before_they_apply() -> None:
    table = PriceTable([O3_LAUNCH, O3_CUT])
    tomorrow = NOW + timedelta(days=1)
    planned = O3_CUT.model_copy(update={"effective_from": tomorrow, "input_per_mtok": Decimal(1)})
    table2 = table.with_prices([planned], now=NOW)
    assert len(table2) == 3
    assert table2.price_for("openai/o3", NOW) == O3_CUT
    assert table2.price_for("openai/o3", tomorrow) == planned
    fixed = planned.model_copy(update={"input_per_mtok": Decimal("1.5")})
    table3 = table2.with_prices([fixed], now=NOW)
    assert len(table3) == 3
    assert table3.price_for("openai/o3", tomorrow) == fixed
    with pytest.raises(PriceError, match="would rewrite history"):  # once it applies: too late
        table2.with_prices([fixed], now=tomorrow + timedelta(seconds=1))


def test_reloading_the_same_entries_is_harmless_and_new_models_may_be_backfilled() -> None:
    table = PriceTable([O3_LAUNCH, O3_CUT])
    assert table.with_prices([O3_LAUNCH, O3_CUT], now=NOW).entries() == table.entries()
    grown = table.with_prices([MINI, CAUSAL_LM], now=NOW)  # models the table did not price
    assert grown.price_for("openai/gpt-4o-mini", NOW) == MINI
    assert len(grown) == 4


def test_json_round_trip_is_exact() -> None:
    odd = Price(
        model="acme/odd",
        effective_from=at("2025-03-04T05:06:07Z"),
        currency="EUR",
        input_per_mtok=Decimal("0.1000"),
        output_per_mtok=Decimal("1E+1"),
        reasoning_per_mtok=Decimal("0.000000001"),
        source="set by ops",
    )
    table = PriceTable([MINI, O3_LAUNCH, O3_CUT, CAUSAL_LM, odd])
    data = table.to_json()
    assert data == json.dumps(json.loads(data), separators=(",", ":")).encode()  # compact
    back = PriceTable.from_json(data)
    assert back.entries() == table.entries()
    for a, b in zip(back.entries(), table.entries(), strict=True):
        assert a.model_dump() == b.model_dump()
        assert str(a.input_per_mtok) == str(b.input_per_mtok)  # "0.1000" stays "0.1000"
    assert back.to_json() == data
    assert json.loads(data)["prices"][1]["cached_input_per_mtok"] == "0.075"
    with pytest.raises(PriceError):
        PriceTable.from_json(b"not json")
    with pytest.raises(PriceError, match=r"prices\[0\]"):
        PriceTable.from_json(b'{"v":1,"prices":[{"model":"openai/x"}]}')


# --- the default table ------------------------------------------------------


def test_the_default_table_loads_and_is_sane() -> None:
    prices = load_price_file(DEFAULT_PRICES)
    table = PriceTable(prices)
    for price in prices:
        assert price.currency == "USD"
        assert price.source, price.version
        for figure in (
            price.input_per_mtok,
            price.output_per_mtok,
            price.cached_input_per_mtok,
            price.reasoning_per_mtok,
            price.gpu_second,
        ):
            assert figure is None or (figure.is_finite() and figure >= 0), price.version
        if price.cached_input_per_mtok is not None:
            assert price.cached_input_per_mtok <= price.input_per_mtok, price.version
        assert price.effective_from <= NOW, price.version
        if price.model.startswith(("triton/", "embedding/")):  # self-hosted: a set rate
            assert price.input_per_mtok > 0
            assert price.source.startswith("set by ops")
        else:
            assert price.input_per_mtok > 0 and price.output_per_mtok > 0, price.version
            assert "as of" in price.source  # the file's source, with its date
    for model in (
        "openai/gpt-4o",
        "openai/gpt-4o-mini",
        "openai/gpt-4.1",
        "openai/gpt-4.1-mini",
        "openai/o3",
        "openai/o4-mini",
        "triton/extractive_answerer",
        "triton/causal_lm",
    ):
        assert table.price_for(model, NOW) is not None, model
    for family in ("anthropic/claude-sonnet", "anthropic/claude-haiku", "anthropic/claude-opus"):
        assert any(m.startswith(family) for m in table.models()), family
    assert any(m.startswith("gemini/gemini-2.5-flash") for m in table.models())
    assert any(m.startswith("gemini/gemini-2.5-pro") for m in table.models())
    mini = table.price_for("openai/gpt-4o-mini", NOW)
    assert mini is not None
    assert str(mini.input_per_mtok) == "0.15"
    assert cost_nanos(mini, TokenUsage(1234, 567, cached_input_tokens=1000)) == 450_300


def test_price_file_errors_name_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "source: ops\nprices:\n"
        "  - {model: openai/a, effective_from: 2025-01-01T00:00:00Z, input_per_mtok: '1'}\n"
        "  - {model: openai/b, effective_from: 2025-01-01T00:00:00Z, input_per_mtokens: '1'}\n"
    )
    with pytest.raises(PriceError, match=r"prices\[1\] \(openai/b\).*input_per_mtokens"):
        load_price_file(path)
    path.write_text("prices:\n  - {model: openai/a, effective_from: 2025-01-01T00:00:00}\n")
    with pytest.raises(PriceError, match=r"prices\[0\].*time zone"):
        load_price_file(path)
    path.write_text(
        "prices:\n"
        "  - {model: openai/a, effective_from: 2025-01-01T00:00:00Z}\n"
        "  - {model: openai/a, effective_from: 2025-01-01T00:00:00Z}\n"
    )
    with pytest.raises(PriceError, match="second entry"):
        load_price_file(path)
    path.write_text("prices: {}\n")
    with pytest.raises(PriceError):
        load_price_file(path)


def test_price_file_numbers_written_bare_stay_exact(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        "currency: EUR\nprices:\n"
        "  - model: openai/a\n    effective_from: 2025-01-01\n"
        "    input_per_mtok: 0.15\n    output_per_mtok: 3\n    source: me\n"
    )
    [price] = load_price_file(path)
    assert price.input_per_mtok == Decimal("0.15")
    assert price.output_per_mtok == 3
    assert price.currency == "EUR"
    assert price.source == "me"
    assert price.effective_from == at("2025-01-01T00:00:00Z")


# --- LiteLLM import ---------------------------------------------------------


def test_litellm_import() -> None:
    data = json.loads(LITELLM_SAMPLE.read_text())
    effective = at("2026-12-01T00:00:00Z")
    prices = from_litellm(data, effective)
    by_model = {p.model: p for p in prices}
    assert sorted(by_model) == [
        "anthropic/claude-sonnet-4-5",
        "azure/gpt-4o",
        "gemini/gemini-2.5-flash",
        "openai/gpt-4o-mini",
        "openai/o3",
        "openai/text-embedding-3-small",
    ]
    assert sorted(prices.skipped) == [
        "dall-e-3",
        "openrouter/some-org/preview-model",
        "whisper-1",
    ]
    assert "sample_spec" not in prices.skipped

    mini = by_model["openai/gpt-4o-mini"]
    assert str(mini.input_per_mtok) == "0.15"  # 1.5e-07 per token, exactly
    assert str(mini.output_per_mtok) == "0.6"
    assert str(mini.cached_input_per_mtok) == "0.075"
    assert mini.reasoning_per_mtok is None
    assert mini.effective_from == effective
    assert mini.source == "LiteLLM model_prices_and_context_window.json"
    azure = by_model["azure/gpt-4o"]  # the key already names its provider
    assert (str(azure.input_per_mtok), str(azure.output_per_mtok)) == ("2.5", "10")
    sonnet = by_model["anthropic/claude-sonnet-4-5"]
    assert (str(sonnet.input_per_mtok), str(sonnet.output_per_mtok)) == ("3", "15")
    assert str(sonnet.cached_input_per_mtok) == "0.3"
    flash = by_model["gemini/gemini-2.5-flash"]
    assert str(flash.reasoning_per_mtok) == "2.5"
    assert str(flash.cached_input_per_mtok) == "0.03"
    embedding = by_model["openai/text-embedding-3-small"]
    assert (str(embedding.input_per_mtok), str(embedding.output_per_mtok)) == ("0.02", "0")

    # The same request costs the same from the import as from the default table.
    usage = TokenUsage(1234, 567, cached_input_tokens=1000)
    assert cost_nanos(mini, usage) == 450_300
    table = PriceTable(load_price_file(DEFAULT_PRICES)).with_prices(prices, now=NOW)
    before = table.price_for("openai/gpt-4o-mini", NOW)
    assert before is not None
    assert before.model_dump(exclude={"source"}) == MINI.model_dump(exclude={"source"})
    assert table.price_for("openai/gpt-4o-mini", effective) == mini


def test_litellm_import_skips_what_it_cannot_price() -> None:
    data = {
        "gpt-x": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 1e-06},
        "openai/gpt-y": {
            "litellm_provider": "openai",
            "mode": "responses",
            "input_cost_per_token": 1e-06,
            "output_cost_per_token": 2e-06,
        },
        "gpt-y": {
            "litellm_provider": "openai",
            "mode": "chat",
            "input_cost_per_token": 1e-06,
            "output_cost_per_token": 2e-06,
        },
        "bad": {
            "litellm_provider": "openai",
            "mode": "chat",
            "input_cost_per_token": "free",
            "output_cost_per_token": 0,
        },
        "neg": {
            "litellm_provider": "openai",
            "mode": "completion",
            "input_cost_per_token": -1e-06,
            "output_cost_per_token": 0,
        },
    }
    prices = from_litellm(data, NOW, source="pinned copy")
    assert [p.model for p in prices] == ["openai/gpt-y"]
    assert prices[0].source == "pinned copy"
    assert str(prices[0].output_per_mtok) == "2"
    assert set(prices.skipped) == {"gpt-x", "gpt-y", "bad", "neg"}
    assert "same model" in prices.skipped["gpt-y"]
