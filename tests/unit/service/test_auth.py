"""Named principals: tokens stored as hashes, roles, revocation, configured tokens."""

from __future__ import annotations

import json

import pytest

from sitetune.db import connect
from sitetune.errors import Forbidden, InputError, Unauthorized
from sitetune.service.auth import Role, authorise
from sitetune.service.principals import PrincipalStore, digest


@pytest.fixture
def store(tmp_path) -> PrincipalStore:
    return PrincipalStore(connect(f"sqlite:///{tmp_path / 'db.sqlite'}"))


def test_a_principal_gets_a_token_stored_as_a_hash_only(store, tmp_path):
    alice, token = store.create("Alice Example (cardiology)", ["clinical"], created_by="ops")
    assert token.startswith("st_") and len(token) > 40
    assert store.authenticate(token) == alice
    assert str(alice) == "Alice Example (cardiology)" and alice.roles == {Role.CLINICAL}
    dump = b"".join(p.read_bytes() for p in tmp_path.glob("db.sqlite*"))  # with the WAL
    assert token.encode() not in dump and digest(token).encode() in dump
    listed = store.list()[0].to_json()
    assert "token" not in listed and listed["created_by"] == "ops"


def test_roles_and_errors(store):
    _, clinical = store.create("reader", "clinical", "ops")
    _, pacs = store.create("orthanc", ["pacs"], "ops")
    _, ops = store.create("admin", ["ops"], "ops")
    assert authorise(store, f"Bearer {clinical}", (Role.CLINICAL,)).name == "reader"
    assert authorise(store, f"bearer {ops}", (Role.CLINICAL,)).name == "admin"  # ops: anything
    with pytest.raises(Unauthorized, match="Bearer"):
        authorise(store, None, (Role.CLINICAL,))
    with pytest.raises(Unauthorized, match="not known"):
        authorise(store, "Bearer nope", (Role.CLINICAL,))
    with pytest.raises(Forbidden, match="orthanc \\(pacs\\)") as err:
        authorise(store, f"Bearer {pacs}", (Role.CLINICAL,))
    assert err.value.status == 403


def test_revocation_takes_effect_at_the_next_lookup(store):
    bob, token = store.create("bob", ["ops"], "admin")
    assert store.authenticate(token) is not None
    assert store.revoke(bob.id).revoked_at is not None
    assert store.authenticate(token) is None
    with pytest.raises(Unauthorized, match="revoked"):
        authorise(store, f"Bearer {token}", (Role.OPS,))


def test_bad_names_and_roles_are_refused_naming_the_allowed_values(store):
    with pytest.raises(InputError, match="clinical") as err:
        store.create("x", ["admin"], "ops")
    assert err.value.code == "bad_roles"
    with pytest.raises(InputError, match="printable"):
        store.create("line\nbreak", ["ops"], "ops")
    with pytest.raises(InputError):
        store.create("", ["ops"], "ops")


def test_configured_tokens_and_the_old_tokens_file_become_principals(store, tmp_path):
    store.import_spec("clinical=c1, ops=o1,pacs=p1")
    store.import_spec("clinical=c1, ops=o1,pacs=p1")  # a restart: nothing new
    assert store.count() == 3
    assert authorise(store, "Bearer o1", (Role.OPS,)).name == "ops"
    old = tmp_path / "tokens.json"
    old.write_text(json.dumps({"tokens": [{"role": "pacs", "sha256": digest("legacy")}]}))
    store.import_file(old)
    assert authorise(store, "Bearer legacy", (Role.PACS,)).name == "pacs"
    with pytest.raises(ValueError, match="role=token"):
        store.import_spec("justatoken")
