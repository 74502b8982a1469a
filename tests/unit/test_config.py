from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.runtime.config import Settings


def test_defaults_are_the_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "PORT",
        "REDIS_URL",
        "DATABASE_URL",
        "QUEUE_CONCURRENCY",
        "MAX_RETRIES",
        "LOG_LEVEL",
        "MOCK_SEED",
        "RATE_LIMIT",
        "PING_INTERVAL",
        "PONG_TIMEOUT",
    ):
        monkeypatch.delenv(var, raising=False)
    settings = Settings(_env_file=None)
    assert settings.port == 3000
    assert settings.redis_url == "redis://localhost:6379"
    assert settings.database_url == "postgres://user:password@localhost:5432/order_engine"
    assert settings.queue_concurrency == 10
    assert settings.max_retries == 3
    assert settings.log_level == "info"
    assert settings.mock_seed is None
    assert settings.rate_limit == 30
    assert settings.ping_interval == 20000
    assert settings.pong_timeout == 10000


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUEUE_CONCURRENCY", "2000")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("MOCK_SEED", "")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "a:9092, b:9092")
    settings = Settings(_env_file=None)
    assert settings.queue_concurrency == 2000
    assert settings.log_level == "debug"
    assert settings.mock_seed is None
    assert settings.kafka_servers == ["a:9092", "b:9092"]


def test_a_swap_window_shorter_than_the_swap_is_refused() -> None:
    with pytest.raises(ValidationError, match="SWAP_WINDOW_MS"):
        Settings(
            _env_file=None,
            swap_window_ms=1000,
            mock_execution_latency_min_ms=0,
            mock_execution_latency_max_ms=3000,
        )


def test_topics_and_groups_take_the_prefix() -> None:
    assert Settings(_env_file=None, topic_prefix="t1.").topic("orders") == "t1.orders"


@pytest.mark.parametrize("field,value", [("queue_concurrency", 0), ("max_retries", 0), ("log_level", "loud")])
def test_bad_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValidationError):
        Settings.model_validate({field: value})


def test_latency_ranges_must_be_ordered() -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, mock_execution_latency_min_ms=3000, mock_execution_latency_max_ms=10)


def test_a_wildcard_cors_origin_is_refused_in_production() -> None:
    assert Settings(_env_file=None, env="development", cors_origins="*").cors_origin_list == ["*"]
    with pytest.raises(ValidationError, match="CORS_ORIGINS"):
        Settings(_env_file=None, env="production", cors_origins="https://app.example, *")


def test_trusted_proxies_must_be_networks() -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, trusted_proxies="127.0.0.1/32,not-a-network")


def test_reads_default_to_twenty_times_the_write_limit_and_follow_it_to_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The test stacks and benchmarks turn limits off with RATE_LIMIT=0 alone: reads must follow it."""
    monkeypatch.delenv("READ_RATE_LIMIT", raising=False)
    assert Settings(_env_file=None, rate_limit=30).read_rate_limit_per_minute == 600
    assert Settings(_env_file=None, rate_limit=0).read_rate_limit_per_minute == 0
    assert Settings(_env_file=None, rate_limit=0, read_rate_limit=7).read_rate_limit_per_minute == 7
    assert Settings(_env_file=None, rate_limit=30, read_rate_limit=0).read_rate_limit_per_minute == 0
    monkeypatch.setenv("READ_RATE_LIMIT", "")
    assert Settings(_env_file=None, rate_limit=5).read_rate_limit_per_minute == 100


def test_api_keys_is_a_path_or_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", "")
    assert Settings(_env_file=None).api_keys is None
    monkeypatch.setenv("API_KEYS", "/etc/order-engine/keys")
    assert str(Settings(_env_file=None).api_keys) == "/etc/order-engine/keys"
