from karkhana.cli import main

raise SystemExit(main())
