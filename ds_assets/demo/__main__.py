from ds_assets.demo.run import main

raise SystemExit(main())
