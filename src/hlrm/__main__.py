from hlrm.cli import main

main()
