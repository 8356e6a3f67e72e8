"""Sending DICOM files to a destination: DICOMweb STOW-RS (httpx) or DIMSE C-STORE
(pynetdicom). Each sender returns nothing on success and raises `DeliveryError` with a
reason an operator can act on otherwise."""

from __future__ import annotations

from pathlib import Path

import httpx
import pydicom
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from sitetune.dicomweb import stow
from sitetune.pacs.routing import Destination, DestinationKind


class DeliveryError(Exception):
    """A delivery attempt failed: the destination is down or busy (tried again later), or
    ``permanent``ly refused what was sent (no retry: a SOP class it does not accept, a
    4xx answer, files gone), so the delivery ends ``failed`` with the reason at once."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


# C-STORE failure statuses that sending again cannot cure (PS3.4 B.2.3): SOP class not
# supported, data set does not match the SOP class, cannot understand.
_PERMANENT_STORE = (range(0x0122, 0x0123), range(0xA900, 0xAA00), range(0xC000, 0xD000))
_TRANSIENT_HTTP = {408, 425, 429}


def _send_dicomweb(destination: Destination, files: list[Path]) -> None:
    try:
        response = stow(destination.url, files, destination.headers, destination.timeout_seconds)
    except httpx.HTTPError as error:
        raise DeliveryError(f"{destination.describe()}: {type(error).__name__}: {error}") from None
    if response.status_code != 200:
        code = response.status_code
        raise DeliveryError(
            f"{destination.describe()} answered {code}: {response.text[:300]}",
            permanent=400 <= code < 500 and code not in _TRANSIENT_HTTP,
        )


def _send_dimse(destination: Destination, files: list[Path]) -> None:
    datasets = [pydicom.dcmread(path) for path in files]
    ae = AE(ae_title=destination.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = destination.timeout_seconds
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise DeliveryError(f"{destination.describe()}: association not established")
    accepted = {str(c.abstract_syntax) for c in assoc.accepted_contexts}
    refused = sorted({UID(str(ds.SOPClassUID)).name for ds in datasets} - {
        UID(uid).name for uid in accepted
    })  # fmt: skip
    try:
        for ds in datasets:  # what it accepts is sent, even when it refuses the rest
            if str(ds.SOPClassUID) not in accepted:
                continue
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code is None:
                raise DeliveryError(f"{destination.describe()}: no C-STORE response")
            if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:  # success or warning
                raise DeliveryError(
                    f"{destination.describe()}: C-STORE status 0x{code:04X}",
                    permanent=any(code in r for r in _PERMANENT_STORE),
                )
    finally:
        assoc.release()
    if refused:
        raise DeliveryError(
            f"{destination.describe()} does not accept {', '.join(refused)} (the other "
            "objects were stored); configure the destination to accept it",
            permanent=True,
        )


def deliver(destination: Destination, files: list[Path]) -> None:
    """Send ``files`` to ``destination``; raises `DeliveryError` when it did not take them."""
    missing = [str(p) for p in files if not Path(p).is_file()]
    if missing:
        raise DeliveryError(f"output files are gone: {missing[:3]}", permanent=True)
    if destination.kind is DestinationKind.DICOMWEB:
        _send_dicomweb(destination, files)
    else:
        _send_dimse(destination, files)
