"""Fixtures shared by the prediction tests."""

import pytest
from django.contrib.auth.models import Permission
from rest_framework.test import APIClient

from accounts.models import User
from predictions.catalogue.artifacts import artifact_bytes
from predictions.catalogue.versions import model_version_create, model_version_save
from predictions.models import MLModel


@pytest.fixture
def shadow_v3(transactional_db, demo_models):
    """iris v3 (v2's weights) listening to every request as a shadow."""
    iris = MLModel.objects.get(name="iris")
    artifact = artifact_bytes(iris.versions.get(label="v2"))
    version = model_version_create(model=iris, label="v3", artifact=artifact, status="active")
    version.is_shadow = True
    version.shadow_share = 1.0
    model_version_save(version=version)
    return version


@pytest.fixture
def publisher(user) -> User:
    """alice, given the 'models' scope permission beside the API users' scopes."""
    user.user_permissions.add(Permission.objects.get(codename="scope_models"))
    return User.objects.get(pk=user.pk)


@pytest.fixture
def models_client(publisher, make_key, client_for) -> APIClient:
    """A key of alice's with the 'models' and 'predict' scopes."""
    return client_for(make_key(publisher, scopes=["models", "predict"]))
