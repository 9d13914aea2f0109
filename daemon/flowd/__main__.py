from flowd.main import main

main()
