"""Feature definitions of the example: two entities, two views, one of them in two versions.

Register them with `mlplat features apply --definitions examples/features/definitions.py`.
Paths are relative to the project root. Version 2 of driver_stats changes the type of
avg_daily_trips (a breaking change), so it is declared as a new version next to version 1:
a model trained on version 1 keeps being served from version 1.
"""
from datetime import timedelta

from mlplat.features import Entity, Feature, FeatureView

driver = Entity("driver", join_key="driver_id", dtype="int64", description="A driver of the fleet.")
customer = Entity("customer", join_key="customer_id", dtype="string", description="A customer account.")

driver_stats_v1 = FeatureView(
    "driver_stats",
    version=1,
    entities=[driver],
    source="examples/features/data/driver_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_field="created",
    ttl=timedelta(days=2),
    features=[
        Feature("conv_rate", "float64", "Share of offers the driver converted."),
        Feature("acc_rate", "float64", "Share of offers the driver accepted."),
        Feature("avg_daily_trips", "int64", "Trips per day, rounded."),
    ],
    owner="ml-core@example.com",
)

driver_stats_v2 = FeatureView(
    "driver_stats",
    version=2,
    entities=[driver],
    source="examples/features/data/driver_stats.parquet",
    timestamp_field="event_timestamp",
    created_timestamp_field="created",
    ttl=timedelta(days=2),
    features=[
        Feature("conv_rate", "float64", "Share of offers the driver converted."),
        Feature("acc_rate", "float64", "Share of offers the driver accepted."),
        Feature("avg_daily_trips", "float64", "Trips per day."),
    ],
    owner="ml-core@example.com",
)

customer_profile = FeatureView(
    "customer_profile",
    entities=[customer],
    source="examples/features/data/customer_profile.csv",
    ttl=timedelta(days=30),
    features=[Feature("lifetime_orders", "int64"), Feature("segment", "string")],
    owner="ml-core@example.com",
)
