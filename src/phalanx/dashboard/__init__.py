"""``phalanx dashboard``: the network, its trust and its ledger in the browser, and a verifier
that trusts no server.

- :mod:`.source` reads an output folder of the range (study, grid, single run, or a study still
  running), as hostile input;
- :mod:`.network` turns a run's summary into the network view (roles, reputation, edges), and a
  deployed network's status snapshot into the same shape (the seam for ``phalanx up``);
- :mod:`.ledger_view` reads a ledger without trusting it and exports proof bundles;
- :mod:`.verifier` is the static verifier page (its SHA-256 is in the README);
- :mod:`.app` is the FastAPI app; :mod:`.embed` puts the same pictures into ``report.html``.

Only :mod:`.app` needs FastAPI; nothing here imports torch.
"""
