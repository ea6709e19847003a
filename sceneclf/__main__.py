from sceneclf.cli import cli

cli()
