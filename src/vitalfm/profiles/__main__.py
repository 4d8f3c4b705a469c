"""``python -m vitalfm.profiles PROFILE...`` (see :mod:`vitalfm.profiles.cli`)."""

from vitalfm.profiles.cli import main

raise SystemExit(main())
