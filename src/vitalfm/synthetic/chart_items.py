"""The chart items the generator writes: itemids per measurement and charting system, units,
the text values of text-only rows, and the out-of-range values and alarm limits behind the
artefacts and MetaVision's ``warning`` flag.

Arrays indexed like :data:`CHARTED_ITEMIDS` (sorted) let the chart rows look an item up with
one ``searchsorted``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from vitalfm.mimic import CHART_ITEMS
from vitalfm.synthetic import vocab

# every charted item (sorted itemids), its unit and whether it is one of the study's vitals
_UNIT_BY_ITEM: dict[int, str | None] = {i.itemid: i.unit for i in CHART_ITEMS}
_UNIT_BY_ITEM.update(
    {d.itemid: d.unitname for d in vocab.ITEM_DEFS if d.itemid not in _UNIT_BY_ITEM}
)
_UNIT_BY_ITEM[vocab.MV_GCS_EYE] = None
_UNIT_BY_ITEM[vocab.CV_GCS_TOTAL] = "points"
_VITAL_BY_ITEM = {i.itemid: i.vital for i in CHART_ITEMS}
CHARTED_ITEMIDS = np.array(sorted(_UNIT_BY_ITEM), dtype=np.int64)
UNITS = pa.array([_UNIT_BY_ITEM[int(i)] for i in CHARTED_ITEMIDS], pa.string())
IS_VITAL = np.array([int(i) in _VITAL_BY_ITEM for i in CHARTED_ITEMIDS])
# the text values of chart rows, and where each kind starts in TEXT_ARRAY
_TEXTS = (
    *vocab.CV_RHYTHMS,
    *vocab.MV_RHYTHMS,
    *vocab.MV_GCS_EYE_TEXT,
    *vocab.TEXT_ONLY_VALUES,
)
TEXT_ARRAY = pa.array(_TEXTS, pa.string())
CV_RHYTHM0 = 0
MV_RHYTHM0 = len(vocab.CV_RHYTHMS)
MV_EYE0 = MV_RHYTHM0 + len(vocab.MV_RHYTHMS)
TEXT_ONLY0 = MV_EYE0 + len(vocab.MV_GCS_EYE_TEXT)

# (CareVue itemid, MetaVision itemid) per measurement
HR_ITEMS = (211, 220045)
SPO2_ITEMS = (646, 220277)
RR_ITEMS = (618, 220210)
RR_TOTAL_ITEMS = (615, 224690)
ART_ITEMS = ((51, 8368, 52), (220050, 220051, 220052))
NBP_ITEMS = ((455, 8441, 456), (220179, 220180, 220181))
ART2_CV_ITEMS = (6701, 8555, 6702)
ART_MEAN2_MV = 225312
MANUAL_CV_ITEMS = (442, 8440, 443)
TEMP_F_ITEMS = (678, 223761)
TEMP_C_ITEMS = (676, 223762)

# typos and device junk, all outside mimic-code's plausibility ranges; JUNK_ROW: each charted
# item's row of JUNK_TABLE (-1: not a vital)
_JUNK = {
    "heart_rate": (0.0, 350.0, 999.0),
    "sbp": (0.0, 450.0, 1200.0),
    "dbp": (0.0, 320.0, 800.0),
    "mbp": (0.0, 310.0, 900.0),
    "resp_rate": (0.0, 7000400.0, 150.0),
    "spo2": (0.0, 101.0, 960.0),
    "temp_c": (0.0, 0.9, 98.6),
    "temp_f": (0.0, 9.8, 37.2),
}
_JUNK_KEYS = tuple(_JUNK)
JUNK_TABLE = np.array([_JUNK[k] for k in _JUNK_KEYS])
JUNK_ROW = np.full(CHARTED_ITEMIDS.size, -1)
for _n, _itemid in enumerate(CHARTED_ITEMIDS):
    _v = _VITAL_BY_ITEM.get(int(_itemid))
    if _v == "temperature":
        _v = "temp_f" if int(_itemid) in TEMP_F_ITEMS else "temp_c"
    if _v is not None:
        JUNK_ROW[_n] = _JUNK_KEYS.index(_v)

# MetaVision alarm limits behind warning = 1 (low, high) per vital, then per charted item
_ALARM = {
    "heart_rate": (50, 120),
    "sbp": (90, 180),
    "dbp": (35, 110),
    "mbp": (60, 130),
    "resp_rate": (8, 30),
    "spo2": (90, 101),
    "temperature": (-1e9, 1e9),
}
ALARM_LO = np.full(CHARTED_ITEMIDS.size, -np.inf)
ALARM_HI = np.full(CHARTED_ITEMIDS.size, np.inf)
for _n, _itemid in enumerate(CHARTED_ITEMIDS):
    _v = _VITAL_BY_ITEM.get(int(_itemid))
    if _v is not None:
        ALARM_LO[_n], ALARM_HI[_n] = _ALARM[_v]
