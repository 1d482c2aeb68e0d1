from kumo.cli.main import main

main()
