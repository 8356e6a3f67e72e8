"""Bearer tokens and roles."""

from __future__ import annotations

import json

import pytest

from sitetune.errors import Forbidden, Unauthorized
from sitetune.service.auth import Role, TokenStore, authorise


def test_generated_tokens_are_stored_as_hashes_only(tmp_path):
    path = tmp_path / "tokens.json"
    tokens = TokenStore.generate(path)
    assert set(tokens) == set(Role)
    text = path.read_text()
    assert all(token not in text for token in tokens.values())
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    store = TokenStore.from_file(path)
    assert {store.role_of(t) for t in tokens.values()} == set(Role)
    assert len(json.loads(text)["tokens"]) == 3


def test_roles_and_errors():
    store = TokenStore.from_spec("clinical=c1, ops=o1,pacs=p1")
    assert authorise(store, "Bearer c1", (Role.CLINICAL,)) is Role.CLINICAL
    assert authorise(store, "bearer o1", (Role.CLINICAL,)) is Role.OPS  # ops may do anything
    with pytest.raises(Unauthorized, match="Bearer"):
        authorise(store, None, (Role.CLINICAL,))
    with pytest.raises(Unauthorized, match="not known"):
        authorise(store, "Bearer nope", (Role.CLINICAL,))
    with pytest.raises(Forbidden, match="role pacs") as err:
        authorise(store, "Bearer p1", (Role.CLINICAL,))
    assert err.value.status == 403


def test_malformed_token_spec_is_refused():
    with pytest.raises(ValueError, match="role=token"):
        TokenStore.from_spec("justatoken")
    with pytest.raises(ValueError):
        TokenStore.from_spec("admin=x")
