"""Board targets: ``python -m boards.build [--board NAME] ...`` (see ``docs/boards.md``).

* :mod:`.build`: the command line, progress, summary table, ``report.json``;
* :mod:`.board`: what a board provides (:class:`~.board.Board`), the report, build errors;
* :mod:`.device`: :class:`~.device.DeviceParams` and the design factories boards build
  (``make_top``, ``make_top_pcie7x``, ``make_standin``);
* :mod:`.versa_ecp5_5g`, :mod:`.nitefury`: one module per board;
* :mod:`.pcie7x_device`, :mod:`.config_space`: the device behind the 7-series hard block;
* :mod:`.standin`: a small stand-in for the device (``--standin``).
"""
