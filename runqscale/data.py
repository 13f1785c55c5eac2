"""Where the bundled traces and graph live: `data/` at the top of the source tree (its README
gives provenance and licences). Found from this file, not the working directory, so commands run
from anywhere in a clone (editable install)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
WC98_DAY25 = DATA_DIR / "worldcup98" / "wc_day25_per_minute.csv"
WC98_PER_SECOND = DATA_DIR / "worldcup98" / "wc_1998-06-25_per_second.csv"
REED98 = DATA_DIR / "deathstarbench" / "socfb-Reed98.edges"
