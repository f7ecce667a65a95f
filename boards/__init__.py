"""Board targets: ``python -m boards.build [--board NAME] ...`` (see ``docs/boards.md``).

* :mod:`.build`: the command line, progress, summary table, ``report.json``;
* :mod:`.board`: what a board provides (:class:`~.board.Board`), the report, build errors;
* :mod:`.device`: :class:`~.device.DeviceParams` and the ``make_top`` hook every board builds;
* :mod:`.versa_ecp5_5g`, :mod:`.nitefury`: one module per board;
* :mod:`.pcie7x_device`, :mod:`.config_space`: the device behind the 7-series hard block;
* :mod:`.standin`: the design built until the device top exists.
"""
