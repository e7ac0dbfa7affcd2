"""Simulated keyboard users and corpus readers behind one ``UserSource`` interface."""

from .corpus import BadLineReport, CorpusError, DirectoryCorpus, JsonlCorpus, ReaderConfig
from .materialize import MaterializedSource, file_sha256, materialize, open_source
from .persona import Persona
from .population import Population, PopulationConfig, user_seed
from .resources import DEFAULT_LANG_DIR, Resources, load_resources
from .splits import (
    SPLITS,
    Split,
    SplitConfig,
    User,
    UserSource,
    assign_split,
    heldout_sample,
    make_user,
    split_train_test,
)
from .stats import compute_stats, distribution, population_stats, rank_frequency, rank_frequency_plot

__all__ = [
    "heldout_sample",
    "BadLineReport",
    "CorpusError",
    "DirectoryCorpus",
    "JsonlCorpus",
    "ReaderConfig",
    "MaterializedSource",
    "file_sha256",
    "materialize",
    "open_source",
    "Persona",
    "Population",
    "PopulationConfig",
    "user_seed",
    "DEFAULT_LANG_DIR",
    "Resources",
    "load_resources",
    "SPLITS",
    "Split",
    "SplitConfig",
    "User",
    "UserSource",
    "assign_split",
    "make_user",
    "split_train_test",
    "compute_stats",
    "distribution",
    "population_stats",
    "rank_frequency",
    "rank_frequency_plot",
]
