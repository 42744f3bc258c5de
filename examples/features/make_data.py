"""Synthetic feature sources and labelled orders for the feature store example (no downloads).

    python examples/features/make_data.py [--seed 7]

Writes data/driver_stats.parquet (hourly driver statistics, with a created timestamp and a few
late-arriving corrections), data/customer_profile.csv (daily customer snapshots) and
data/orders.parquet (the entity rows: driver, customer, order time and whether it was completed).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).parent / "data"
START = pd.Timestamp("2024-03-01", tz="UTC")


def make(seed: int = 7, drivers: int = 200, customers: int = 300, days: int = 30, orders: int = 5000) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    DATA.mkdir(parents=True, exist_ok=True)
    hours = days * 24
    n = drivers * hours // 6  # a statistics row per driver about every 6 hours
    event = START + pd.to_timedelta(rng.integers(0, hours * 3600, n), unit="s")
    driver = rng.integers(1000, 1000 + drivers, n)
    quality = (driver % 7) / 7.0
    stats = pd.DataFrame({
        "driver_id": driver.astype("int64"),
        "event_timestamp": event,
        "created": event + pd.to_timedelta(rng.integers(1, 600, n), unit="s"),
        "conv_rate": np.clip(quality + rng.normal(0, 0.1, n), 0, 1),
        "acc_rate": np.clip(0.5 + quality / 2 + rng.normal(0, 0.05, n), 0, 1),
        "avg_daily_trips": rng.poisson(10 + 20 * quality).astype("int64"),
    })
    # late-arriving corrections: same event time, written later; they win
    late = stats.sample(frac=0.02, random_state=seed).copy()
    late["created"] = late["created"] + pd.Timedelta(hours=6)
    late["conv_rate"] = np.clip(late["conv_rate"] + 0.05, 0, 1)
    stats = pd.concat([stats, late], ignore_index=True)
    days_idx = pd.date_range(START, periods=days, freq="D")
    profile = pd.DataFrame({
        "customer_id": np.repeat([f"c{i:04d}" for i in range(customers)], days),
        "event_timestamp": np.tile(days_idx, customers),
    })
    profile["lifetime_orders"] = rng.poisson(20, len(profile)).astype("int64")
    profile["segment"] = rng.choice(["new", "regular", "vip"], len(profile))
    profile["event_timestamp"] = profile["event_timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")  # naive = UTC
    order_time = START + pd.Timedelta(days=2) + pd.to_timedelta(rng.integers(0, (days - 2) * 86400, orders), unit="s")
    order_driver = rng.integers(1000, 1000 + drivers + 10, orders)  # a few drivers have no history
    order_quality = (order_driver % 7) / 7.0
    orders_df = pd.DataFrame({
        "order_id": np.arange(orders),
        "driver_id": order_driver.astype("int64"),
        "customer_id": [f"c{i:04d}" for i in rng.integers(0, customers, orders)],
        "event_timestamp": order_time,
        "completed": (rng.random(orders) < 0.3 + 0.6 * order_quality).astype(int),
    })
    paths = {"driver_stats": DATA / "driver_stats.parquet", "customer_profile": DATA / "customer_profile.csv",
             "orders": DATA / "orders.parquet"}
    stats.to_parquet(paths["driver_stats"], index=False)
    profile.to_csv(paths["customer_profile"], index=False)
    orders_df.to_parquet(paths["orders"], index=False)
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=7)
    for path in make(parser.parse_args().seed).values():
        print(f"wrote {path}")
