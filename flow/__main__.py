from flow.cli.main import main

main()
