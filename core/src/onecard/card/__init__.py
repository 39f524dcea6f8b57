"""The one-card: MIFARE Classic layout, keys, the PC/SC reader driver, and emulators.

``mifare`` knows the chip (geometry, access bits); ``emulator`` and ``vpcd`` are a card of ours
that a real PC/SC stack sees; ``reader`` drives ACR122U-class readers; ``keys`` derives per-card
keys; ``layout`` is the card map; ``service`` holds the office's card operations.
"""
