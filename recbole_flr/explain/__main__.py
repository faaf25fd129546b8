"""``python -m recbole_flr.explain``: see :mod:`recbole_flr.explain`."""

from recbole_flr.explain import main

main()
