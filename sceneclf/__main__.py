from sceneclf.cli import main

main()
