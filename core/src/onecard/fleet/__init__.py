"""The meter fleet emulator: many emulated remote meters on Modbus TCP ports and serial ptys.

:mod:`onecard.fleet.sim` holds a meter's physical state (registers advance over simulated time,
the relay obeys commands); each plugin's meter protocol supplies a *responder* that speaks its wire
format for a set of such meters (:meth:`onecard.interfaces.MeterProtocol.responder`). The fleet
server (:mod:`onecard.fleet.server`) serves them. Used by the tests, ``bench/reading.py`` and
``make demo``.
"""
