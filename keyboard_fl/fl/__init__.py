"""Federated training: cohort sampling, client update, one jitted round (sharded over devices)."""

from keyboard_fl.fl.client import ClientMetrics, as_client_optimizer, client_update
from keyboard_fl.fl.round import (
    AggregatorConfig,
    CohortBatch,
    RoundMetrics,
    ServerState,
    build_round,
    dp_mean_delta,
    make_server_optimizer,
    privatize_mean,
    server_init,
    server_update,
)
from keyboard_fl.fl.sampling import cohort_capacity, sample_cohort, sample_cohort_exact, sample_fixed_cohort
from keyboard_fl.fl.sharding import capacity_multiple, client_mesh, replicate, shard_cohort

__all__ = [
    "AggregatorConfig",
    "ClientMetrics",
    "CohortBatch",
    "RoundMetrics",
    "ServerState",
    "as_client_optimizer",
    "build_round",
    "capacity_multiple",
    "client_mesh",
    "client_update",
    "cohort_capacity",
    "dp_mean_delta",
    "make_server_optimizer",
    "privatize_mean",
    "replicate",
    "sample_cohort",
    "server_update",
    "sample_cohort_exact",
    "sample_fixed_cohort",
    "server_init",
    "shard_cohort",
]
