"""Remote meters: gateways and buses, scheduled reading, server-side fee control, alarms, relay
control and remote recharge. The wire formats are the plugins' (their meter protocols); this
package knows none of them.
"""
