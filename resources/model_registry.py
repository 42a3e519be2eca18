"""The model registry handle as a Dagster resource: active versions live, recorded versions in an audit."""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from assets.predictions.models import ModelSet, load_models


class ModelRegistryResource(dg.ConfigurableResource):
    """Loads the models a bar uses from the registry at ``paths.registry``."""

    def load(self, versions: Mapping[str, str] | None = None) -> ModelSet:
        return load_models(versions)
