from loyaltyctl.cli.main import run

run()
