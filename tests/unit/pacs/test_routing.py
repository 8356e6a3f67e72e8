"""Routing rules and destinations from the TOML file (sitetune.pacs.routing)."""

from __future__ import annotations

import pytest

from sitetune.errors import InputError
from sitetune.pacs.routing import (
    DEFAULT_ROUTES,
    DestinationKind,
    Group,
    SeriesInfo,
    load_config,
)

CONFIG = """
[destinations.pacs]
type = "dicomweb"
url = "http://pacs:8042/dicom-web/"
headers = { Authorization = "Basic eDp5" }

[destinations.archive]
type = "dimse"
host = "10.0.0.5"
port = 104
ae_title = "ARCHIVE"

[[routes]]
name = "ccta"
model = "lv-ct"
modality = "ct"
series_description = "cardiac|heart"
body_part = "heart|chest"
image_type = "axial"
group = "study"
destinations = ["pacs", "archive"]

[[routes]]
name = "any-mr-flair"
model = "flair-lesion"
modality = "MR"
series_description = "flair"
"""


def test_routes_match_in_order_with_every_criterion(tmp_path):
    path = tmp_path / "pacs.toml"
    path.write_text(CONFIG)
    config = load_config(path)
    assert config.destinations["pacs"].kind is DestinationKind.DICOMWEB
    assert config.destinations["pacs"].url == "http://pacs:8042/dicom-web"
    assert config.destinations["archive"].describe() == "C-STORE ARCHIVE@10.0.0.5:104"
    cardiac = SeriesInfo("CT", "Cardiac 75%", "HEART", ("ORIGINAL", "PRIMARY", "AXIAL"))
    route = config.route_for(cardiac)
    assert route.name == "ccta" and route.group is Group.STUDY
    assert route.destinations == ("pacs", "archive")
    # each criterion can refuse on its own
    assert config.route_for(SeriesInfo("CT", "Cardiac", "HEART", ("LOCALIZER",))) is None
    assert config.route_for(SeriesInfo("CT", "Cardiac", "ABDOMEN", ("AXIAL",))) is None
    assert config.route_for(SeriesInfo("MR", "Cardiac", "HEART", ("AXIAL",))) is None
    assert config.route_for(SeriesInfo("MR", "sag 3D FLAIR")).name == "any-mr-flair"
    assert config.route_for(SeriesInfo("MR", "T1 MPRAGE")) is None


def test_without_a_file_the_builtin_routes_apply(tmp_path):
    config = load_config(tmp_path / "absent.toml")
    assert config.routes == DEFAULT_ROUTES and config.destinations == {}
    assert config.route_for(SeriesInfo("CT", "Cine heart 10 phases")).model == "lv-ct"
    assert config.route_for(SeriesInfo("MR", "AX FLAIR")).model == "flair-lesion"
    assert config.route_for(SeriesInfo("CT", "Abdomen venous")) is None


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[[routes]]\nname = 'a'\n", "'model' is required"),
        ("[[routes]]\nmodel = 'lv-ct'\ndestinations = ['nowhere']\n", "unknown destinations"),
        ("[[routes]]\nmodel = 'lv-ct'\nseries_description = '(('\n", "not a regex"),
        ("[[routes]]\nmodel = 'lv-ct'\ngroup = 'patient'\n", "group must be"),
        ("[[routes]]\nmodel = 'lv-ct'\nmodalty = 'CT'\n", "unknown keys ['modalty']"),
        ("[destinations.x]\ntype = 'ftp'\n", "type must be"),
        ("[destinations.x]\ntype = 'dimse'\nhost = 'h'\n", "needs host, port, ae_title"),
        ("[destinations.x]\ntype = 'dicomweb'\n", "needs 'url'"),
        ("routes = [\n", "pacs.toml"),
    ],
)
def test_a_malformed_file_is_refused_naming_the_problem(tmp_path, text, named):
    path = tmp_path / "pacs.toml"
    path.write_text(text)
    with pytest.raises(InputError) as raised:
        load_config(path)
    assert named in raised.value.message
